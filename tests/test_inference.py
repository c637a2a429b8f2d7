"""segzoo.inference: frame prediction, smoothing, regions, overlays, video and camera loops."""

import logging
import os
import time

import cv2
import keras
import numpy as np
import pytest

from harness import TinyBackbone, TinyHead
from segzoo import postprocess
from segzoo.errors import ConfigError
from segzoo.inference import (FramePredictor, draw_overlay, keep_largest_regions, predict_video,
                              run_camera)
from segzoo.models import SegmentationModel

COLORS = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
NAMES = ["background", "hole", "crack"]


@pytest.fixture(scope="module")
def model():
    return SegmentationModel(TinyBackbone(), TinyHead(3))


def make_video(path, frames=9, fps=7.0, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return str(path)


def test_keep_largest_regions_per_class():
    classes = np.zeros((20, 20), np.uint8)
    classes[0:2, 0:2] = 1          # 4 px
    classes[5:10, 5:10] = 1        # 25 px
    classes[15:18, 15:18] = 1      # 9 px
    classes[0:3, 15:20] = 2        # 15 px, the only region of class 2
    kept = keep_largest_regions(classes, count=2)
    assert (kept[5:10, 5:10] == 1).all() and (kept[15:18, 15:18] == 1).all()
    assert (kept[0:2, 0:2] == 0).all()
    assert (kept[0:3, 15:20] == 2).all()


def test_predictor_matches_the_model_at_frame_size(model):
    frame = np.random.default_rng(1).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    classes, probabilities = FramePredictor(model).predict(frame)
    assert classes.shape == (40, 56) and probabilities.shape == (40, 56, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    # the model saw the frame rounded to its divisor (8): 40 x 56 exactly
    expected = keras.ops.convert_to_numpy(postprocess.classes(model(frame[None].astype("float32"))))[0]
    assert (classes == expected).mean() > 0.99


def test_smoothing_is_a_moving_average_of_probabilities(model):
    rng = np.random.default_rng(2)
    first, second = (rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(2))
    p1 = FramePredictor(model).predict(first)[1]
    p2 = FramePredictor(model).predict(second)[1]
    smooth = FramePredictor(model, smoothing=0.75)
    smooth.predict(first)
    np.testing.assert_allclose(smooth.predict(second)[1], 0.75 * p1 + 0.25 * p2, atol=1e-5)
    smooth.reset()
    np.testing.assert_allclose(smooth.predict(second)[1], p2, atol=1e-5)
    with pytest.raises(ValueError, match="smoothing"):
        FramePredictor(model, smoothing=1.0)


@pytest.mark.parametrize("runtime", ["keras", "onnx"])
def test_argmax_at_stride_upsamples_the_class_map_of_the_stride_logits(model, runtime):
    frames = np.random.default_rng(7).integers(0, 255, (2, 32, 48, 3), dtype=np.uint8)
    predictor = FramePredictor(model, runtime=runtime, argmax_at_stride=True)
    smoothed = FramePredictor(model, smoothing=0.5, argmax_at_stride=True)
    probabilities = []
    for frame in frames:
        logits = keras.ops.convert_to_numpy(model.stride_logits(frame[None].astype(np.float32)))[0]  # (4, 6, 3)
        probabilities.append(keras.ops.convert_to_numpy(postprocess.probabilities(logits[None]))[0])
        classes = predictor.predict_classes(frame)
        assert classes.shape == (32, 48) and classes.dtype == np.uint8
        # each class at stride covers its 8 x 8 block of the frame
        assert (classes == np.kron(logits.argmax(-1), np.ones((8, 8), int))).mean() > 0.99
        smoothed_classes = smoothed.predict_classes(frame)
    average = 0.5 * probabilities[0] + 0.5 * probabilities[1]  # smoothing happens at the stride too
    np.testing.assert_array_equal(smoothed_classes, np.kron(average.argmax(-1), np.ones((8, 8), int)))
    assert predictor.times.frames == 2 and set(predictor.times.per_frame_ms()) >= {"model", "postprocess"}
    other_size = predictor.predict_classes(np.zeros((36, 50, 3), np.uint8))  # model at 32x48, classes at 36x50
    assert other_size.shape == (36, 50)


def test_overlay_draws_classes_legend_and_fps():
    frame = np.full((120, 160, 3), 100, np.uint8)
    classes = np.zeros((120, 160), np.uint8)
    classes[60:, 80:] = 1
    plain = draw_overlay(frame, classes, COLORS, NAMES)
    assert plain[100, 120, 0] > 150 and plain[100, 120, 1] < 100  # blended with red
    assert (plain[100, 20] == 100).all()                          # background untouched
    legend_hole = plain[:60, :20].reshape(-1, 3)
    assert any((pixel == (255, 0, 0)).all() for pixel in legend_hole)
    with_fps = draw_overlay(frame, classes, COLORS, NAMES, fps=25.0)
    assert (with_fps[:30, 100:] != plain[:30, 100:]).any()


def test_predict_video_keeps_frame_rate_size_and_count(model, tmp_path):
    source = make_video(tmp_path / "in.avi", frames=9, fps=7.0)
    result = predict_video(FramePredictor(model), source, tmp_path / "out.mp4", COLORS, NAMES, progress=False)
    assert result["frames"] == 9
    capture = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(7.0, abs=0.01)
    assert int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == 64 and int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == 48
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 9


def test_classes_without_probabilities_are_the_same_classes(model):
    frames = np.random.default_rng(5).integers(0, 255, (3, 32, 48, 3), dtype=np.uint8)
    predictor = FramePredictor(model, keep_largest=1)
    for frame in frames:
        np.testing.assert_array_equal(predictor.predict_classes(frame), predictor.predict(frame)[0])
    smoothed = FramePredictor(model, smoothing=0.5)  # needs the probabilities: the same path as predict
    np.testing.assert_array_equal(smoothed.predict_classes(frames[0]), FramePredictor(model).predict(frames[0])[0])


def test_predict_video_says_where_each_frame_s_time_goes(model, tmp_path):
    source = make_video(tmp_path / "in.avi", frames=6)
    result = predict_video(FramePredictor(model, input_size=(32, 48)), source, tmp_path / "out.avi", COLORS, NAMES,
                           progress=False)
    times = result["times_ms"]
    assert set(times) == {"decode", "preprocess", "model", "postprocess", "overlay", "encode", "total"}
    assert all(value > 0 for value in times.values())
    assert times["total"] == pytest.approx(sum(v for k, v in times.items() if k != "total"))
    assert 0 < result["loop_fps"] <= 1000.0 / times["total"] * 1.01  # the loop is no faster than its stages


def test_a_runtime_built_on_the_first_frame_is_setup_time_not_model_time(model, tmp_path, monkeypatch, caplog):
    """The export, check and ``auto`` race on the first frame take seconds; the loop's figures leave them out."""
    predictor = FramePredictor(model, input_size=(32, 48))
    build = predictor._forward._build

    def slow_build(images):
        time.sleep(0.6)
        return build(images)

    monkeypatch.setattr(predictor._forward, "_build", slow_build)
    caplog.set_level(logging.INFO, logger="segzoo")
    result = predict_video(predictor, make_video(tmp_path / "in.avi", frames=4), tmp_path / "out.mp4", COLORS,
                           NAMES, progress=False)
    assert predictor.times.setup_seconds >= 0.6
    assert result["times_ms"]["model"] < 150 and result["loop_fps"] > 1000 / 150  # not 600 ms over 4 frames
    assert "s once, not counted" in caplog.text
    assert "out.mp4: written as MPEG-4" in caplog.text and ".partial" not in caplog.text  # the file the user named


def test_predict_video_names_an_unreadable_file(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        predict_video(FramePredictor(model), tmp_path / "missing.mp4", tmp_path / "o.mp4", COLORS, NAMES)


def test_camera_without_display_writes_a_file_and_says_where_each_frame_s_time_goes(model, tmp_path, monkeypatch,
                                                                                     caplog):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.chdir(tmp_path)
    source = make_video(tmp_path / "stream.avi", frames=5)
    caplog.set_level(logging.INFO, logger="segzoo")
    result = run_camera(FramePredictor(model), COLORS, NAMES, camera=source, max_frames=3)
    assert result["frames"] == 3
    assert result["output"].startswith("camera_") and os.path.isfile(result["output"])
    assert int(cv2.VideoCapture(result["output"]).get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    # the same figures as predict_video: no window was shown, so no display stage
    assert set(result["times_ms"]) == {"decode", "preprocess", "model", "postprocess", "overlay", "encode", "total"}
    assert 0 < result["loop_fps"] <= 1000.0 / result["times_ms"]["total"] * 1.01
    assert "3 frames at 64x48" in caplog.text and "FPS end to end; per frame (ms): decode" in caplog.text


def test_camera_that_cannot_open_says_which(model):
    with pytest.raises(ConfigError, match="Cannot open camera='no-such-stream.avi'"):
        run_camera(FramePredictor(model), COLORS, NAMES, camera="no-such-stream.avi", show=False, output="x.mp4")


def test_video_writer_picks_a_codec_per_extension_and_keeps_ffmpeg_notices_off_the_terminal(tmp_path, capfd):
    from segzoo.inference import open_video_writer

    for name in ("a.webm", "b.mp4", "c.avi"):
        writer = open_video_writer(tmp_path / name, 5, (32, 24))
        assert capfd.readouterr().err == ""  # OpenCV prints "tag ... is not supported" for a .webm it writes
        for _ in range(3):
            writer.write(np.zeros((24, 32, 3), np.uint8))
        writer.release()
        assert cv2.VideoCapture(str(tmp_path / name)).get(cv2.CAP_PROP_FRAME_COUNT) == 3
    with pytest.raises(ValueError, match=".webm"):
        open_video_writer(tmp_path / "d.gif", 5, (32, 24))


def test_captured_stderr_holds_what_c_code_writes_to_descriptor_2(capfd):
    from segzoo.native_output import captured_stderr

    with captured_stderr() as captured:
        os.write(2, b"cudart_stub: no GPU\n")
        assert captured() == "cudart_stub: no GPU\n"
    os.write(2, b"shown\n")
    assert capfd.readouterr().err == "shown\n"


def test_native_notices_are_hidden_once_asked_and_shown_when_the_block_fails(capfd, monkeypatch):
    from segzoo import native_output

    monkeypatch.setattr(native_output, "_HIDE_NOTICES", False)  # as a Python caller finds it
    with native_output.native_notices_hidden():
        os.write(2, b"shown: hiding is off\n")
    native_output.hide_native_notices()  # as the segzoo command does
    with native_output.native_notices_hidden():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    with pytest.raises(RuntimeError), native_output.native_notices_hidden():
        os.write(2, b"what went wrong\n")
        raise RuntimeError("failed")
    assert capfd.readouterr().err == "shown: hiding is off\nwhat went wrong\n"


@pytest.mark.parametrize("runtime", ["litert", "onnx"])
def test_predictor_on_an_exported_runtime_matches_keras(model, runtime):
    """The model is exported once per frame size, checked, and gives Keras's classes; the file is removed after."""
    frames = np.random.default_rng(2).integers(0, 255, (3, 40, 56, 3), dtype=np.uint8)
    keras_predictor, exported = FramePredictor(model), FramePredictor(model, runtime=runtime)
    for frame in frames:
        expected, expected_probabilities = keras_predictor.predict(frame)
        classes, probabilities = exported.predict(frame)
        assert (classes == expected).mean() > 0.99
        np.testing.assert_allclose(probabilities, expected_probabilities, atol=1e-4)
    export_dir = exported._forward.workdir
    [exported_file] = os.listdir(export_dir)  # one export for the one frame size
    assert exported_file.endswith(f"{runtime}_40x56.{'tflite' if runtime == 'litert' else 'onnx'}")
    del exported
    import gc

    gc.collect()
    assert not os.path.exists(export_dir)


def test_predictor_refuses_an_unknown_runtime(model):
    with pytest.raises(ValueError, match="runtime must be one of"):
        FramePredictor(model, runtime="tensorrt")
