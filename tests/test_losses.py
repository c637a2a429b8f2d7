"""Tests for segzoo.losses: each loss against a plain-numpy reference written here."""

import json

import keras
import numpy as np
import pytest

from harness import run_in_backend
from segzoo import losses
from segzoo.losses.cross_entropy import hard_pixels

IGNORE = 255
NUM_CLASSES = 4


# ---------------------------------------------------------------- numpy references

def np_log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def weighted_mean(values, weights):
    return float((values * weights).sum() / weights.sum()) if weights.sum() > 0 else 0.0


def reference_ce(labels, logits, class_weights=None, label_smoothing=0.0, ohem_threshold=None, ohem_min_kept=0):
    """Weighted CE with OHEM, in float64, selecting hard pixels by explicit sorting."""
    labels = labels.reshape(-1)
    logits = logits.reshape(labels.size, -1).astype(np.float64)
    valid = (labels != IGNORE) & (labels < logits.shape[-1])
    log_probs = np_log_softmax(logits[valid])
    targets = labels[valid]
    nll = -log_probs[np.arange(targets.size), targets]
    pixel_losses = (1 - label_smoothing) * nll - label_smoothing * log_probs.mean(axis=-1)
    weights = np.ones_like(nll) if class_weights is None else np.asarray(class_weights, np.float64)[targets]
    if ohem_threshold is not None:
        probs = np.exp(-nll)
        ascending = np.sort(probs)
        k = min(ohem_min_kept, probs.size)
        kth_smallest = ascending[k - 1] if k > 0 else -np.inf
        kept = (probs < ohem_threshold) | (probs <= kth_smallest)
        pixel_losses, weights = pixel_losses[kept], weights[kept]
    return weighted_mean(pixel_losses, weights)


def reference_focal(labels, logits, gamma=2.0, alpha=None):
    labels = labels.reshape(-1)
    logits = logits.reshape(labels.size, -1).astype(np.float64)
    valid = (labels != IGNORE) & (labels < logits.shape[-1])
    targets = labels[valid]
    log_p = np_log_softmax(logits[valid])[np.arange(targets.size), targets]
    pixel_losses = -((1 - np.exp(log_p)) ** gamma) * log_p
    if isinstance(alpha, list):
        pixel_losses = pixel_losses * np.asarray(alpha)[targets]
    elif alpha is not None:
        pixel_losses = pixel_losses * alpha
    return weighted_mean(pixel_losses, np.ones_like(pixel_losses))


def binary_targets(labels, logits):
    labels = labels.reshape(-1)
    valid = labels != IGNORE
    return (labels[valid] > 0).astype(np.float64), logits.reshape(-1)[valid].astype(np.float64)


def reference_bce(labels, logits, pos_weight=None):
    t, x = binary_targets(labels, logits)
    pw = 1.0 if pos_weight is None else pos_weight
    pixel_losses = -(pw * t * np_log_sigmoid(x) + (1 - t) * np_log_sigmoid(-x))
    return weighted_mean(pixel_losses, np.ones_like(pixel_losses))


def reference_binary_focal(labels, logits, alpha=0.25, gamma=2.0):
    t, x = binary_targets(labels, logits)
    p = 1 / (1 + np.exp(-x))
    p_t = t * p + (1 - t) * (1 - p)
    ce = -(t * np_log_sigmoid(x) + (1 - t) * np_log_sigmoid(-x))
    alpha_t = 1.0 if alpha is None else alpha * t + (1 - alpha) * (1 - t)
    pixel_losses = alpha_t * (1 - p_t) ** gamma * ce
    return weighted_mean(pixel_losses, np.ones_like(pixel_losses))


# ---------------------------------------------------------------- data and cases

def make_batch(seed=0, channels=NUM_CLASSES, scale=3.0, shape=(2, 16, 16)):
    """Random class ids with about 15% ignore pixels, and random normal logits."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, shape).astype(np.uint8)
    labels[rng.random(shape) < 0.15] = IGNORE
    logits = (scale * rng.standard_normal(shape + (channels,))).astype(np.float32)
    return labels, logits


# (id, loss factory, numpy reference, binary model)
CASES = [
    ("ce", lambda: losses.CrossEntropy(), reference_ce, False),
    ("ce_weighted", lambda: losses.CrossEntropy(class_weights=[0.5, 1.0, 2.0, 4.0]),
     lambda y, x: reference_ce(y, x, class_weights=[0.5, 1.0, 2.0, 4.0]), False),
    ("ce_smoothing", lambda: losses.CrossEntropy(label_smoothing=0.1),
     lambda y, x: reference_ce(y, x, label_smoothing=0.1), False),
    ("ce_ohem", lambda: losses.CrossEntropy(class_weights=[1.0, 2.0, 1.0, 3.0], ohem_threshold=0.7, ohem_min_kept=50),
     lambda y, x: reference_ce(y, x, class_weights=[1.0, 2.0, 1.0, 3.0], ohem_threshold=0.7, ohem_min_kept=50), False),
    ("focal", lambda: losses.FocalLoss(), reference_focal, False),
    ("focal_alpha_float", lambda: losses.FocalLoss(gamma=1.5, alpha=0.25),
     lambda y, x: reference_focal(y, x, gamma=1.5, alpha=0.25), False),
    ("focal_alpha_list", lambda: losses.FocalLoss(alpha=[0.1, 1.0, 2.0, 0.5]),
     lambda y, x: reference_focal(y, x, alpha=[0.1, 1.0, 2.0, 0.5]), False),
    ("bce", lambda: losses.BinaryCrossEntropy(), reference_bce, True),
    ("bce_pos_weight", lambda: losses.BinaryCrossEntropy(pos_weight=3.0),
     lambda y, x: reference_bce(y, x, pos_weight=3.0), True),
    ("binary_focal", lambda: losses.BinaryFocalLoss(), reference_binary_focal, True),
    ("binary_focal_no_alpha", lambda: losses.BinaryFocalLoss(alpha=None, gamma=0.5),
     lambda y, x: reference_binary_focal(y, x, alpha=None, gamma=0.5), True),
]
CASE_IDS = [case[0] for case in CASES]


def case_batch(binary, **kwargs):
    return make_batch(channels=1 if binary else NUM_CLASSES, **kwargs)


def loss_value(loss, labels, logits):
    value = loss(labels, logits)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert tuple(value.shape) == ()
    return float(keras.ops.convert_to_numpy(value))


def loss_gradient(loss, labels, logits):
    """d loss / d logits as numpy, on whichever backend runs the tests."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(logits)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = loss(labels, x)
        return tape.gradient(value, x).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda x: loss(labels, x))(logits))
    import torch

    x = torch.tensor(logits, requires_grad=True)
    loss(labels, x).backward()
    return x.grad.numpy()


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_numpy_reference(case):
    _, make_loss, reference, binary = case
    labels, logits = case_batch(binary)
    assert loss_value(make_loss(), labels, logits) == pytest.approx(reference(labels, logits), rel=1e-5)


def test_class_weights_apply_per_pixel_before_the_mean():
    labels = np.array([[[0, 1]]])
    logits = np.array([[[[2.0, 0.0], [2.0, 0.0]]]], np.float32)
    nll = -np_log_softmax(logits[0, 0].astype(np.float64))[[0, 1], [0, 1]]
    expected = (1 * nll[0] + 3 * nll[1]) / 4
    assert loss_value(losses.CrossEntropy(class_weights=[1, 3]), labels, logits) == pytest.approx(expected, rel=1e-6)


def test_ohem_keeps_min_kept_pixels_when_few_are_below_threshold():
    labels, logits = make_batch(seed=1)
    valid = labels != IGNORE
    probs = np.exp(np_log_softmax(logits.astype(np.float64)))
    true_probs = np.take_along_axis(probs, np.where(valid, labels, 0)[..., None].astype(int), -1)[..., 0]
    below = int((true_probs[valid] < 0.2).sum())
    min_kept = below + 40
    assert min_kept < valid.sum()
    kept = keras.ops.convert_to_numpy(hard_pixels(true_probs.astype(np.float32), valid, 0.2, min_kept))
    assert kept.sum() == min_kept
    assert not kept[~valid].any()
    hardest = np.sort(true_probs[valid])[:min_kept]
    np.testing.assert_allclose(np.sort(true_probs[kept]), hardest, rtol=1e-6)
    loss = losses.CrossEntropy(ohem_threshold=0.2, ohem_min_kept=min_kept)
    expected = reference_ce(labels, logits, ohem_threshold=0.2, ohem_min_kept=min_kept)
    assert loss_value(loss, labels, logits) == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(reference_ce(labels, logits, ohem_threshold=0.2), rel=1e-3)


@pytest.mark.parametrize("min_kept", [0, 10_000_000])
def test_ohem_extremes(min_kept):
    labels, logits = make_batch(seed=2)
    loss = losses.CrossEntropy(ohem_threshold=0.5, ohem_min_kept=min_kept)
    expected = reference_ce(labels, logits, ohem_threshold=0.5, ohem_min_kept=min_kept)
    assert loss_value(loss, labels, logits) == pytest.approx(expected, rel=1e-5)
    if min_kept > labels.size:  # keeps every valid pixel: plain cross-entropy
        assert expected == pytest.approx(reference_ce(labels, logits), rel=1e-9)


def test_ohem_with_dynamic_batch_shape_in_a_tf_graph():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.function tracing")
    import tensorflow as tf

    loss = losses.CrossEntropy(ohem_threshold=0.7, ohem_min_kept=50)
    traced = tf.function(
        loss.call,
        input_signature=[tf.TensorSpec((None, None, None), tf.uint8), tf.TensorSpec((None, None, None, NUM_CLASSES))],
    )
    labels, logits = make_batch(seed=3)
    expected = reference_ce(labels, logits, ohem_threshold=0.7, ohem_min_kept=50)
    assert float(traced(labels, logits)) == pytest.approx(expected, rel=1e-5)


def test_gamma_zero_focal_is_cross_entropy():
    labels, logits = make_batch(seed=4)
    focal = loss_value(losses.FocalLoss(gamma=0.0), labels, logits)
    assert focal == pytest.approx(loss_value(losses.CrossEntropy(), labels, logits), rel=1e-6)


def test_binary_losses_count_every_foreground_id_as_one():
    labels = np.array([[[0, 1, 3, IGNORE]]], np.uint8)
    logits = np.array([[[[-1.0], [2.0], [0.5], [40.0]]]], np.float32)
    t = np.array([0.0, 1.0, 1.0])
    x = np.array([-1.0, 2.0, 0.5])
    expected = np.mean(-(t * np_log_sigmoid(x) + (1 - t) * np_log_sigmoid(-x)))
    assert loss_value(losses.BinaryCrossEntropy(), labels, logits) == pytest.approx(expected, rel=1e-6)


def test_labels_with_channel_axis_and_any_int_dtype():
    labels, logits = make_batch(seed=5)
    expected = loss_value(losses.CrossEntropy(), labels, logits)
    for variant in (labels[..., None], labels.astype(np.int64), labels.astype(np.int32)[..., None]):
        assert loss_value(losses.CrossEntropy(), variant, logits) == pytest.approx(expected, rel=1e-6)


def test_labels_out_of_range_count_for_nothing():
    labels, logits = make_batch(seed=6)
    with_bad = labels.copy()
    with_bad[0, 0, :4] = NUM_CLASSES + 3
    cleaned = with_bad.copy()
    cleaned[0, 0, :4] = IGNORE
    assert loss_value(losses.CrossEntropy(), with_bad, logits) == pytest.approx(
        loss_value(losses.CrossEntropy(), cleaned, logits), rel=1e-6)


def test_ignore_index_none_counts_every_pixel():
    labels = np.array([[[0, 255]]], np.uint8)
    logits = np.array([[[[-2.0], [3.0]]]], np.float32)
    expected = np.mean([-np_log_sigmoid(2.0), -np_log_sigmoid(3.0)])
    assert loss_value(losses.BinaryCrossEntropy(ignore_index=None), labels, logits) == pytest.approx(expected)


# ---------------------------------------------------------------- robustness

@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_all_ignored_batch_gives_zero_and_zero_gradient(case):
    _, make_loss, _, binary = case
    _, logits = case_batch(binary)
    labels = np.full(logits.shape[:3], IGNORE, np.uint8)
    assert loss_value(make_loss(), labels, logits) == 0.0
    gradient = loss_gradient(make_loss(), labels, logits)
    assert np.all(gradient == 0)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float16_logits_give_a_float32_result_close_to_float32(case):
    _, make_loss, _, binary = case
    labels, logits = case_batch(binary)
    half = loss_value(make_loss(), labels, logits.astype(np.float16))
    assert np.isfinite(half)
    assert half == pytest.approx(loss_value(make_loss(), labels, logits), rel=2e-3)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_large_logits_stay_finite_and_exact(case):
    _, make_loss, reference, binary = case
    labels, logits = case_batch(binary, seed=7)
    logits = np.where(logits > 0, 100.0, -100.0).astype(np.float32)
    value = loss_value(make_loss(), labels, logits)
    assert np.isfinite(value) and value > 1.0
    assert value == pytest.approx(reference(labels, logits), rel=1e-5)
    assert np.all(np.isfinite(loss_gradient(make_loss(), labels, logits)))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradient_is_finite_and_matches_finite_differences(case):
    _, make_loss, reference, binary = case
    labels, logits = case_batch(binary, seed=8, shape=(1, 4, 4))
    gradient = loss_gradient(make_loss(), labels, logits)
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).sum() > 0
    pixel = np.unravel_index(np.argmax(np.abs(gradient)), gradient.shape)
    step = np.zeros_like(logits, dtype=np.float64)
    step[pixel] = 1e-4
    numeric = (reference(labels, logits + step) - reference(labels, logits - step)) / 2e-4
    assert gradient[pixel] == pytest.approx(numeric, rel=1e-2, abs=1e-5)


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_wrong_number_of_channels_is_a_clear_error(case):
    _, make_loss, _, binary = case
    labels, logits = case_batch(not binary)
    expected = "binary loss" if binary else "softmax loss"
    with pytest.raises(ValueError, match=expected):
        make_loss()(labels, logits)


def test_per_class_values_of_the_wrong_length_are_a_clear_error():
    labels, logits = make_batch()
    with pytest.raises(ValueError, match="class_weights has 3 values but the logits have 4 classes"):
        losses.CrossEntropy(class_weights=[1, 1, 1])(labels, logits)
    with pytest.raises(ValueError, match="alpha has 2 values"):
        losses.FocalLoss(alpha=[1, 1])(labels, logits)


def test_mismatched_sizes_are_a_clear_error():
    labels, logits = make_batch()
    with pytest.raises(ValueError, match="at the label size"):
        losses.CrossEntropy()(labels[:, :8], logits)


def test_sample_weight_is_refused():
    labels, logits = make_batch()
    with pytest.raises(ValueError, match="does not support sample_weight"):
        losses.FocalLoss()(labels, logits, sample_weight=np.ones(2))


@pytest.mark.parametrize("kwargs", [
    {"ohem_threshold": 1.5}, {"ohem_min_kept": -1}, {"label_smoothing": 1.0}, {"class_weights": [1, -1]},
])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError, match="CrossEntropy"):
        losses.CrossEntropy(**kwargs)


def test_get_builds_by_name_and_lists_valid_names():
    assert isinstance(losses.get("ce", ohem_threshold=0.9), losses.CrossEntropy)
    assert losses.get("ce", ohem_threshold=0.9).ohem_threshold == 0.9
    assert isinstance(losses.get("focal"), losses.FocalLoss)
    assert isinstance(losses.get("bce"), losses.BinaryCrossEntropy)
    assert isinstance(losses.get("binary_focal"), losses.BinaryFocalLoss)
    with pytest.raises(ValueError, match="'dice'.*bce, binary_focal, ce, focal"):
        losses.get("dice")


# ---------------------------------------------------------------- serialization

@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_config_round_trip(case):
    _, make_loss, _, binary = case
    loss = make_loss()
    config = loss.get_config()
    json.dumps(config)
    restored = type(loss).from_config(config)
    assert restored.get_config() == config
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(rebuilt) is type(loss) and rebuilt.get_config() == config
    labels, logits = case_batch(binary)
    assert loss_value(restored, labels, logits) == loss_value(loss, labels, logits)


@pytest.mark.parametrize("case_id", ["ce_ohem", "focal_alpha_list", "binary_focal"])
def test_saved_model_restores_its_loss_with_safe_mode(case_id, tmp_path):
    _, make_loss, _, binary = next(case for case in CASES if case[0] == case_id)
    loss = make_loss()
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(1 if binary else NUM_CLASSES, 1)(inputs))
    model.compile(optimizer="sgd", loss=loss)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.loss) is type(loss)
    assert loaded.loss.get_config() == loss.get_config()
    labels, logits = case_batch(binary)
    assert loss_value(loaded.loss, labels, logits) == loss_value(loss, labels, logits)


def test_trains_a_tiny_model_with_fit():
    rng = np.random.default_rng(9)
    images = rng.uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    labels = (images[..., 0] > 127).astype(np.uint8)
    labels[:, :2] = IGNORE
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(keras.layers.Rescaling(1 / 255)(inputs)))
    model.compile(optimizer=keras.optimizers.Adam(0.05),
                  loss=losses.CrossEntropy(ohem_threshold=0.9, ohem_min_kept=64))
    history = model.fit(images, labels, batch_size=2, epochs=3, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]


# ---------------------------------------------------------------- other backends

_BACKEND_SCRIPT = """
import json, sys
import numpy as np
import keras
from segzoo import losses
data = np.load(sys.argv[1])
out = {}
for name, config in json.loads(sys.argv[2]).items():
    loss = keras.saving.deserialize_keras_object(config)
    logits = data["binary_logits"] if loss.binary else data["logits"]
    out[name] = float(keras.ops.convert_to_numpy(loss(data["labels"], logits)))
# one jit-compiled training step with OHEM (dynamic number of valid pixels)
inputs = keras.Input((16, 16, 3))
model = keras.Model(inputs, keras.layers.Conv2D(4, 1)(inputs))
model.compile(optimizer="sgd", loss=losses.CrossEntropy(ohem_threshold=0.7, ohem_min_kept=50))
images = np.linspace(0, 1, 2 * 16 * 16 * 3, dtype="float32").reshape(2, 16, 16, 3)
out["fit"] = float(model.fit(images, data["labels"], batch_size=2, verbose=0).history["loss"][0])
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends_give_the_tensorflow_values(backend, tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("compares against the TensorFlow backend")
    labels, logits = make_batch(seed=10)
    _, binary_logits = make_batch(seed=11, channels=1)
    np.savez(tmp_path / "batch.npz", labels=labels, logits=logits, binary_logits=binary_logits)
    configs = {case_id: keras.saving.serialize_keras_object(make_loss()) for case_id, make_loss, _, _ in CASES}
    script = _BACKEND_SCRIPT.replace("sys.argv[1]", repr(str(tmp_path / "batch.npz"))).replace(
        "sys.argv[2]", repr(json.dumps(configs)))
    values = run_in_backend(backend, script)
    for case_id, make_loss, _, binary in CASES:
        expected = loss_value(make_loss(), labels, binary_logits if binary else logits)
        assert values[case_id] == pytest.approx(expected, rel=1e-5), case_id
    assert np.isfinite(values["fit"])


_MIRRORED_SCRIPT = """
import json
import numpy as np
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from segzoo import losses

def train(strategy):
    with strategy.scope():
        inputs = keras.Input((8, 8, 3))
        model = keras.Model(inputs, keras.layers.Conv2D(3, 1, kernel_initializer="ones")(inputs))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.CrossEntropy())
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (4, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, 3, (4, 8, 8))
    loss = model.fit(images, labels, batch_size=4, epochs=1, shuffle=False, verbose=0).history["loss"][0]
    return loss, model.get_weights()[0].ravel().tolist()

single = train(tf.distribute.get_strategy())
mirrored = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
print(json.dumps({"single": single, "mirrored": mirrored}))
"""


@pytest.mark.slow
def test_mirrored_strategy_trains_like_a_single_device():
    """Two replicas of half a batch each give the single-device loss and update."""
    values = run_in_backend("tensorflow", _MIRRORED_SCRIPT)
    (single_loss, single_kernel), (mirrored_loss, mirrored_kernel) = values["single"], values["mirrored"]
    assert mirrored_loss == pytest.approx(single_loss, rel=1e-5)
    np.testing.assert_allclose(mirrored_kernel, single_kernel, rtol=1e-5)
    assert not np.allclose(single_kernel, 1.0)
