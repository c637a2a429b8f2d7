"""segzoo.runtime: one list of runtime names, a forward function per runtime, and ``auto``."""

import keras
import numpy as np
import pytest

from harness import TinyBackbone, TinyHead, random_images
from segzoo import inference, runtime
from segzoo.models import SegmentationModel


@pytest.fixture(scope="module")
def model():
    return SegmentationModel(TinyBackbone(), TinyHead(3))


def test_every_runtime_name_comes_from_one_list():
    assert set(inference.RUNTIMES) - {"auto"} <= set(runtime.RUNTIMES)
    assert not set(runtime.INT8_RUNTIMES) & set(inference.RUNTIMES)  # live prediction has no calibration images
    assert set(runtime.AUTO_CANDIDATES) <= set(inference.RUNTIMES)
    with pytest.raises(ValueError, match="runtime must be one of"):
        runtime.is_available("tensorrt")


@pytest.mark.parametrize("upsample", [True, False])
@pytest.mark.parametrize("name", ["keras", "litert", "onnx"])
def test_each_float_runtime_gives_the_keras_logits(model, tmp_path, name, upsample):
    images = random_images(1, 32, 48, seed=2)
    forward = runtime.make_forward(name, model, (32, 48), tmp_path, check_images=images, upsample=upsample)
    assert forward.runtime == name and (forward.path is None) == (name == "keras")
    # without the upsample: the logits at the output stride (8 here), where the official DDRNet ends
    expected = model.predict(images, verbose=0) if upsample else keras.ops.convert_to_numpy(model.stride_logits(images))
    assert expected.shape == ((1, 32, 48, 3) if upsample else (1, 4, 6, 3))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(forward(images)), expected, atol=1e-4, rtol=1e-4)


def test_stride_logits_are_the_model_before_its_resize(model):
    images = random_images(2, 32, 48, seed=6)
    stride = model.stride_logits(images)
    assert stride.dtype == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images)),
                               keras.ops.convert_to_numpy(model.resize([stride, images])), rtol=1e-6)


def test_an_exported_runtime_needs_a_size_and_a_folder(model):
    with pytest.raises(ValueError, match="give input_size and workdir"):
        runtime.make_forward("onnx", model)


def test_auto_keeps_the_fastest_candidate_that_can_run(model, tmp_path, monkeypatch):
    built = runtime.make_forward
    speeds = {"keras": 9.0, "onnx": 3.0}

    def make_forward(name, *args, **kwargs):
        if name == "litert":
            raise RuntimeError("cannot convert")  # left out, not fatal
        return built(name, *args, **kwargs)

    monkeypatch.setattr(runtime, "make_forward", make_forward)
    monkeypatch.setattr(runtime, "measure_latency", lambda model, shape, batch, warmup, runs, forward, images: {
        "median_ms": speeds[forward.runtime]})
    best, timings = runtime.fastest_forward(model, (32, 48), tmp_path, random_images(1, 32, 48))
    assert best.runtime == "onnx" and timings == speeds


def test_a_frame_predictor_on_auto_says_what_it_chose_and_predicts_like_keras(model):
    frame = random_images(1, 32, 48, seed=4)[0].astype(np.uint8)
    keras_classes, keras_probabilities = inference.FramePredictor(model).predict(frame)
    predictor = inference.FramePredictor(model, runtime="auto")
    assert predictor.chosen_runtime is None
    classes, probabilities = predictor.predict(frame)
    assert predictor.chosen_runtime in runtime.AUTO_CANDIDATES
    np.testing.assert_allclose(probabilities, keras_probabilities, atol=1e-4)
    assert np.mean(classes == keras_classes) > 0.999
