"""The example scripts end to end, as a user runs them: CVAT export -> train -> eval -> video -> camera ->
export (the quickstart runs from the installed wheel in test_install.py)."""

import json
import logging
import os
import runpy

import cv2
import numpy as np
import pytest

from harness import REPO_ROOT
from segzoo import data


def example(name):
    """The ``main`` of ``examples/<name>.py``, loaded without running it."""
    return runpy.run_path(os.path.join(REPO_ROOT, "examples", f"{name}.py"), run_name="segzoo_example")["main"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A CVAT sample (zip, saved without images) and a checkpoint trained on it through examples/train.py."""
    root = tmp_path_factory.mktemp("examples")
    sample = data.make_cvat_sample(root / "sample", num_images=12, image_size=(64, 96), save_images=False,
                                   zip=True, video_frames=6, seed=3)
    run = root / "run"
    example("train")(["--data", sample.export, "--images", sample.images, "--preset", "ddrnet23_slim",
                      "--epochs", "2", "--batch_size", "4", "--image_size", "64", "96", "--weights", "none",
                      "--checkpoint_dir", str(run), "--progress", "0", "--val_ratio", "0.25"])
    return sample, run


@pytest.mark.slow
def test_train_writes_checkpoints_from_a_cvat_zip(trained):
    _, run = trained
    for name in ("best.keras", "last.keras", "state.json", "log.csv", "dataset/classes.json"):
        assert (run / name).exists(), name


@pytest.mark.slow
def test_eval_writes_metrics_and_pictures(trained, tmp_path, capsys):
    sample, run = trained
    example("eval")(["--checkpoint", str(run / "best.keras"), "--data", sample.export, "--images", sample.images,
                     "--val_ratio", "0.25", "--visualize", "--latency_size", "64", "96", "--latency_runs", "3",
                     "--output", str(tmp_path / "eval")])
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["per_class_iou"]) == {"background", "crack", "hole"}
    assert 0.0 <= metrics["mean_iou"] <= 1.0 and metrics["parameters"] > 5e6 and metrics["latency"]["runs"] == 3
    assert len(os.listdir(tmp_path / "eval" / "visualizations")) > 0
    assert "mean IoU" in capsys.readouterr().out


@pytest.mark.slow
def test_predict_video_and_camera_write_playable_videos(trained, tmp_path):
    sample, run = trained
    example("predict_video")(["--checkpoint", str(run / "best.keras"), "--video", sample.video,
                              "--output", str(tmp_path / "out.mp4"), "--smoothing", "0.5", "--keep_largest", "2"])
    source, output = cv2.VideoCapture(sample.video), cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert output.get(cv2.CAP_PROP_FRAME_COUNT) == source.get(cv2.CAP_PROP_FRAME_COUNT) == 6
    assert output.get(cv2.CAP_PROP_FPS) == pytest.approx(source.get(cv2.CAP_PROP_FPS), abs=0.01)
    example("predict_realtime")(["--checkpoint", str(run / "best.keras"), "--camera", sample.video, "--no_show",
                                 "--output", str(tmp_path / "camera.mp4"), "--max_frames", "4",
                                 "--runtime", "litert", "--argmax_at_stride"])
    assert cv2.VideoCapture(str(tmp_path / "camera.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 4


@pytest.mark.slow
def test_export_int8_litert_and_onnx_with_checks(trained, tmp_path, capsys, caplog):
    sample, run = trained
    caplog.set_level(logging.INFO, logger="segzoo")
    example("export")(["--checkpoint", str(run / "best.keras"), "--format", "litert", "--quantize", "int8",
                       "--data", sample.export, "--images", sample.images, "--calibration_images", "8",
                       "--input_size", "64", "96", "--output", str(tmp_path / "m.tflite"),
                       "--report", str(tmp_path / "report.json")])
    captured = capsys.readouterr()
    said = captured.out + captured.err + caplog.text
    assert said.count("class agreement") == 1, said  # the check is reported once, not logged and printed
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["quantize"] == "int8" and report["class_agreement"] >= 0.95
    example("export")(["--checkpoint", str(run / "best.keras"), "--format", "onnx", "--output_kind", "classes",
                       "--input_size", "64", "96", "--output", str(tmp_path / "m.onnx"), "--no_upsample",
                       "--report", str(tmp_path / "onnx.json")])
    assert (tmp_path / "m.onnx").stat().st_size > 1e6
    assert json.loads((tmp_path / "onnx.json").read_text())["upsample"] is False
    from segzoo import export

    assert export.runner(tmp_path / "m.onnx", "onnx")(np.zeros((1, 64, 96, 3), np.float32)).shape == (1, 8, 12)
    with pytest.raises(SystemExit) as refused:
        example("export")(["--checkpoint", str(run / "best.keras"), "--format", "litert", "--quantize", "int8",
                           "--output", str(tmp_path / "n.tflite")])
    assert refused.value.code == 2 and "--quantize int8 needs --data" in capsys.readouterr().err
