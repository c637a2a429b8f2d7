"""segzoo.weight_average: the moving average of every float weight, its warm-up, applying it, saving it."""

import keras
import numpy as np
import pytest

from segzoo.checkpoints.torch_file import CheckpointError
from segzoo.weight_average import WeightAverage


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


class Recorder(keras.callbacks.Callback):
    """The model's weights after every step."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_begin(self, logs=None):
        self.steps.append([keras.ops.convert_to_numpy(v) for v in self.model.weights])

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([keras.ops.convert_to_numpy(v) for v in self.model.weights])


def fit(model, callbacks, steps=6):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4 * steps, 8, 8, 3)), rng.normal(size=(4 * steps, 8, 8, 2))
    model.fit(x.astype("float32"), y.astype("float32"), batch_size=4, epochs=1, verbose=0, callbacks=callbacks)


def test_momentum_warms_up_to_its_value():
    average = WeightAverage(0.99)
    assert average.momentum_at(1) == pytest.approx(2 / 11)
    assert average.momentum_at(10) == pytest.approx(11 / 20)
    assert average.momentum_at(10_000) == 0.99
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(1.0)


def test_every_float_weight_is_averaged_step_by_step_and_the_trained_model_keeps_the_average():
    model, average, recorder = small_model(), WeightAverage(0.5), Recorder()
    fit(model, [recorder, average])
    expected = [w.astype(np.float64) for w in recorder.steps[0]]
    for step, weights in enumerate(recorder.steps[1:], start=1):
        m = average.momentum_at(step)
        expected = [m * e + (1 - m) * w for e, w in zip(expected, weights)]
    assert len(model.non_trainable_weights) == 2  # the batch norm's moving mean and variance are averaged too
    for variable, value in zip(model.weights, expected):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), value, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected[0], recorder.steps[-1][0])  # the average, not the last step's kernel


def test_applied_swaps_the_average_in_for_a_block_and_validation_scores_it():
    model, average = small_model(), WeightAverage(0.9)
    fit(model, [average])
    average.on_train_batch_end(0)  # one more step of averaging, after fit put the average in
    kernel = model.weights[0]
    trained = keras.ops.convert_to_numpy(kernel)
    kernel.assign(trained + 1.0)
    with average.applied():
        np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel), average.values()[0])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(kernel), trained + 1.0)


def test_save_and_load_round_trip_and_another_models_file_is_refused(tmp_path):
    model, average = small_model(), WeightAverage(0.5)
    fit(model, [average])
    average.save(tmp_path / "average.npz")
    restored = WeightAverage(0.5)
    restored.set_model(model)
    restored.load(tmp_path / "average.npz")
    for a, b in zip(average.values(), restored.values()):
        np.testing.assert_array_equal(a, b)
    inputs = keras.Input((8, 8, 3))
    other = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
    stranger = WeightAverage(0.5)
    stranger.set_model(other)
    with pytest.raises(CheckpointError, match="average of other variables"):
        stranger.load(tmp_path / "average.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable weight average"):
        restored.load(tmp_path / "broken.npz")
