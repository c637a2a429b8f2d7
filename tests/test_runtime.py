"""segzoo.runtime: one list of runtime names, a forward function per runtime, and ``auto``."""

import logging
import tempfile

import keras
import numpy as np
import pytest

from harness import TinyBackbone, TinyHead, random_images
from segzoo import inference, runtime
from segzoo.errors import ConfigError
from segzoo.models import SegmentationModel


@pytest.fixture(scope="module")
def model():
    return SegmentationModel(TinyBackbone(), TinyHead(3))


def test_every_runtime_name_comes_from_one_list():
    assert set(inference.RUNTIMES) - {"auto"} == set(runtime.RUNTIMES)
    assert set(runtime.AUTO_CANDIDATES) | set(runtime.AUTO_INT8_CANDIDATES) <= set(inference.RUNTIMES)
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
    monkeypatch.setattr(runtime, "measure_latencies", lambda forwards, images, warmup, runs: {
        name: {"median_ms": speeds[name]} for name in forwards})
    best, timings = runtime.fastest_forward(model, (32, 48), tmp_path, random_images(1, 32, 48))
    assert best.runtime == "onnx" and timings == speeds


def test_a_frame_predictor_on_auto_says_what_it_chose_and_predicts_like_keras(model, caplog):
    frame = random_images(1, 32, 48, seed=4)[0].astype(np.uint8)
    keras_classes, keras_probabilities = inference.FramePredictor(model).predict(frame)
    predictor = inference.FramePredictor(model, runtime="auto")
    assert predictor.chosen_runtime is None
    with caplog.at_level(logging.INFO, logger="segzoo"):
        classes, probabilities = predictor.predict(frame)
    assert predictor.chosen_runtime in runtime.AUTO_CANDIDATES
    # each export's check is named by what it is for, not by its temporary file
    assert "runtime onnx at 48x32 (onnx, none" in caplog.text and tempfile.gettempdir() not in caplog.text
    np.testing.assert_allclose(probabilities, keras_probabilities, atol=1e-4)
    assert np.mean(classes == keras_classes) > 0.999


@pytest.mark.parametrize("name", runtime.INT8_RUNTIMES)
def test_an_int8_runtime_without_calibration_images_is_refused_before_any_work(model, name):
    with pytest.raises(ConfigError, match="calibration_data"):
        inference.FramePredictor(model, runtime=name)
    with pytest.raises(ConfigError, match="calibration_data"):
        runtime.ForwardPerSize(model, name, calibration_images=[])
    runtime.check_calibration("onnx", None)  # float runtimes need none


def test_a_frame_predictor_on_int8_calibrates_on_training_images_of_any_size(model):
    """Calibration images of other sizes than the frame are resized to the model's input first."""
    frame = random_images(1, 32, 48, seed=4)[0].astype(np.uint8)
    calibration = [image.astype(np.uint8) for image in random_images(4, 40, 60, seed=5)]
    keras_classes, _ = inference.FramePredictor(model).predict(frame)
    predictor = inference.FramePredictor(model, runtime="onnx-int8", calibration_images=calibration)
    classes, probabilities = predictor.predict(frame)
    assert predictor.chosen_runtime == "onnx-int8" and probabilities.shape == (32, 48, 3)
    assert np.mean(classes == keras_classes) > 0.9


def test_auto_with_calibration_images_races_the_int8_runtimes_too(model, monkeypatch):
    speeds = {"keras": 9.0, "litert": 5.0, "onnx": 4.0, "litert-int8": 3.0, "onnx-int8": 2.0}
    built = []

    def make_forward(name, model, input_size, workdir, calibration_images=None, **kwargs):
        built.append((name, None if calibration_images is None else calibration_images.shape))
        return runtime.Forward(name, lambda images: model.predict(images, verbose=0))

    monkeypatch.setattr(runtime, "make_forward", make_forward)
    monkeypatch.setattr(runtime, "measure_latencies", lambda forwards, images, warmup, runs: {
        name: {"median_ms": speeds[name]} for name in forwards})
    calibration = [np.zeros((40, 60, 3), np.uint8)] * 2
    frames = random_images(1, 32, 48)
    float_only = runtime.ForwardPerSize(model, "auto")
    float_only(frames)
    assert float_only.chosen_runtime == "onnx" and {name for name, _ in built} == set(runtime.AUTO_CANDIDATES)
    built.clear()
    with_int8 = runtime.ForwardPerSize(model, "auto", calibration_images=calibration)
    with_int8(frames)
    assert with_int8.chosen_runtime == "onnx-int8"
    assert dict(built) == {name: (2, 32, 48, 3) for name in speeds}  # calibrated at the frames' size


def test_latencies_timed_in_turn_share_the_machine_s_drift(monkeypatch):
    """A clock that slows down during the measurement: timed in turn, two equal functions stay equal."""
    now = [0.0]

    def slowing_clock():
        now[0] += 0.001 * (1 + len(calls))  # each reading later by more: the machine slows down
        return now[0]

    calls = []
    monkeypatch.setattr(runtime.time, "perf_counter", slowing_clock)
    forwards = {name: (lambda name: lambda images: calls.append(name) or images)(name) for name in "ab"}
    statistics = runtime.measure_latencies(forwards, np.zeros((1, 4, 4, 3), np.float32), warmup=1, runs=10)
    assert calls[:2] == ["a", "b"] and calls[2:4] == ["a", "b"] and calls[4:6] == ["b", "a"]  # rotated rounds
    assert statistics["a"]["runs"] == statistics["b"]["runs"] == 10
    assert abs(statistics["a"]["median_ms"] / statistics["b"]["median_ms"] - 1) < 0.1
