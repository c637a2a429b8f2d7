"""segzoo.cli: every dataclass field becomes a flag and comes back typed."""

import argparse
import dataclasses
import json

import keras
import pytest

from segzoo.cli import add_dataclass_arguments, dataclass_from_args


@dataclasses.dataclass
class Options:
    name: str = dataclasses.field(default="a", metadata={"help": "a name", "choices": ("a", "b")})
    count: int = dataclasses.field(default=3, metadata={"help": "how many"})
    size: tuple[int, int] = dataclasses.field(default=(4, 5), metadata={"help": "size", "metavar": ("H", "W")})
    weights: tuple[float, ...] = dataclasses.field(default=None, metadata={"help": "weights"})
    flag: bool = dataclasses.field(default=True, metadata={"help": "a switch"})


def parse(argv):
    parser = add_dataclass_arguments(argparse.ArgumentParser(), Options)
    return dataclass_from_args(Options, parser.parse_args(argv))


def test_defaults_and_typed_values():
    assert parse([]) == Options()
    options = parse(["--name", "b", "--count", "7", "--size", "8", "9", "--weights", "1", "2.5", "--no_flag"])
    assert options == Options("b", 7, (8, 9), (1.0, 2.5), False)
    assert parse(["--no-flag"]) == parse(["--no_flag"]) == Options(flag=False)  # argparse's spelling: an alias
    assert parse(["--no_flag", "--flag"]) == Options()


def test_help_shows_defaults_and_bad_choices_fail(capsys):
    parser = add_dataclass_arguments(argparse.ArgumentParser(), Options)
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "how many (default: 3)" in text and "--size H W" in text and "--no_flag" in text
    assert "--no-flag" not in text  # the alias works but is not listed
    with pytest.raises(SystemExit):
        parser.parse_args(["--name", "c"])


# -- the segzoo command ------------------------------------------------------------------------------

import os
import re
import shutil
import subprocess
import sys
import zipfile

from harness import REPO_ROOT
from segzoo import cli, data


def segzoo(argv, capsys):
    """Run ``segzoo argv`` in this process: ``(exit status, stdout, stderr)``."""
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_help_lists_every_command_and_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert done.value.code == 0 and all(name in text for name in cli.COMMANDS)
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip().startswith("segzoo 0.")
    with pytest.raises(SystemExit) as refused:
        cli.main(["no-such-command"])
    assert refused.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_a_mistyped_command_or_flag_gets_the_closest_name(capsys):
    assert cli.main(["trian", "--data", "x"]) == 2
    assert "no command 'trian' (did you mean train?)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        cli.main(["train", "--data", "x", "--epochz", "3", "--batch_size=4", "--bach_size=2"])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and err.count("\n") == 1  # one line, no usage block
    assert "segzoo train: error: unrecognized arguments: --epochz (did you mean --epochs?) 3 " in err
    assert "--bach_size=2 (did you mean --batch_size?)" in err


def run_fresh(*argv, timeout=300):
    """``python -m segzoo *argv`` in a fresh process, from the checkout."""
    return subprocess.run([sys.executable, "-m", "segzoo", *argv], capture_output=True, text=True, cwd=REPO_ROOT,
                          env=dict(os.environ, PYTHONPATH=REPO_ROOT), timeout=timeout)


def test_command_help_in_a_fresh_process_has_no_third_party_log_lines():
    result = run_fresh("train", "--help")
    assert result.returncode == 0 and "--time_budget" in result.stdout and "--progress" in result.stdout
    assert result.stderr == "", result.stderr


def test_every_parser_builds_without_tensorflow():
    """--help and a mistyped flag answer at once: no command's flags need Keras or TensorFlow loaded."""
    from segzoo.cli import COMMANDS

    loaded = json.loads(subprocess.run([sys.executable, "-c", f"""
import contextlib, io, json, sys
from segzoo import cli
loaded = {{}}
for name in {list(COMMANDS)!r}:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        cli.main([name, "--help"])
    loaded[name] = sorted(m for m in ("keras", "tensorflow") if m in sys.modules)
print(json.dumps(loaded))
"""], capture_output=True, text=True, check=True, cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=REPO_ROOT),
        timeout=300).stdout)
    assert loaded == {name: [] for name in COMMANDS}


def test_a_command_that_loads_tensorflow_still_says_only_its_message(tmp_path):
    """TensorFlow loads after the flags are read (for the run), still with its start-up lines hidden."""
    result = run_fresh("eval", "--checkpoint", str(tmp_path / "missing.keras"), "--data", str(tmp_path))
    assert result.returncode == 2 and "missing.keras" in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("segzoo eval: error:"), result.stderr


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A CVAT zip exported without images, and its images."""
    return data.make_cvat_sample(tmp_path_factory.mktemp("cli") / "sample", num_images=4, image_size=(32, 48),
                                 save_images=False, zip=True, video_frames=0, seed=1)


def assert_one_message(status, err, *fragments):
    """Exit status 2 and one ``segzoo <command>: error: ...`` message (however it wraps), no traceback."""
    assert status == 2 and "Traceback" not in err and err.startswith("segzoo ") and ": error: " in err
    assert err.count(": error: ") == 1
    text = " ".join(err.split())
    for fragment in fragments:
        assert fragment in text, err


def test_an_export_without_images_names_the_flag(sample, tmp_path, capsys):
    status, _, err = segzoo(["train", "--data", sample.export, "--checkpoint_dir", str(tmp_path / "run")], capsys)
    assert_one_message(status, err, "--images", "Save images")
    assert "images=" not in err


def test_the_default_weights_offline_are_one_message_with_the_way_out(sample, tmp_path, monkeypatch, capsys):
    """Default preset (ddrnet23_slim) and weights (imagenet), no cached trunk, no internet."""
    def offline(fname, origin, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("SEGZOO_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setattr(keras.utils, "get_file", offline)
    status, _, err = segzoo(["train", "--data", sample.export, "--images", sample.images,
                             "--checkpoint_dir", str(tmp_path / "run")], capsys)
    assert "Importing CVAT export" in err  # the data comes first, with its progress bar
    assert_one_message(status, err[err.index("segzoo train: error"):], "download.openmmlab.com", "--weights none",
                       str(tmp_path / "weights" / "downloads" / "ddrnet23s-in1kpre_3rdparty-1ccac5b1.pth"))


def test_a_wrong_folder_is_one_message(tmp_path, capsys):
    status, _, err = segzoo(["eval", "--checkpoint", str(tmp_path / "none.keras"), "--data",
                             str(tmp_path / "missing"), "--output", str(tmp_path / "eval")], capsys)
    assert_one_message(status, err, "none.keras")


def test_a_checkpoint_that_is_not_a_keras_file_is_one_message(tmp_path, capsys):
    picture = tmp_path / "photo.png"
    picture.write_bytes(b"\x89PNG\r\n")
    status, _, err = segzoo(["predict", "--checkpoint", str(picture), "--images", str(tmp_path),
                             "--output", str(tmp_path / "out")], capsys)
    assert_one_message(status, err, "photo.png", "expected a .keras file")


def test_a_camera_that_cannot_open_is_one_message_naming_the_flag(tmp_path, capsys):
    status, _, err = segzoo(["camera", "--checkpoint", tiny_checkpoint(tmp_path / "m.keras"), "--camera",
                             str(tmp_path / "no-stream.avi"), "--no_show", "--output", str(tmp_path / "out.mp4"),
                             "--max_frames", "1"], capsys)
    assert_one_message(status, err, "Cannot open --camera", "no-stream.avi")


def test_labelmap_one_folder_above_the_masks_names_the_mask_folder(sample, tmp_path, capsys):
    folder = tmp_path / "repo"
    with zipfile.ZipFile(sample.export) as archive:
        archive.extractall(folder / "export")
    shutil.move(folder / "export" / "labelmap.txt", folder / "labelmap.txt")
    status, _, err = segzoo(["augment", "--data", str(folder), "--images", sample.images,
                             "--output", str(tmp_path / "out")], capsys)
    assert_one_message(status, err, "export/SegmentationClass", "move labelmap.txt")


def test_augment_says_what_it_wrote(sample, tmp_path, capsys):
    status, out, _ = segzoo(["augment", "--data", sample.export, "--images", sample.images, "--copies", "2",
                             "--workers", "1", "--output", str(tmp_path / "aug")], capsys)
    assert status == 0 and "4 images and 8 augmented copies (2 each)" in out
    assert len(os.listdir(tmp_path / "aug" / "rgb")) == 12


def test_debug_shows_the_traceback_and_bugs_keep_theirs(tmp_path, monkeypatch):
    with pytest.raises(data.DataError):
        cli.main(["augment", "--source", str(tmp_path / "missing"), "--output", str(tmp_path / "o"), "--debug"])
    from segzoo.cli import augment

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(augment, "run", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["augment", "--source", "x", "--output", str(tmp_path / "o")])


# -- segzoo eval with test-time augmentation -----------------------------------------------------------

def tiny_checkpoint(path):
    """A tiny untrained 3-class model saved as a .keras checkpoint."""
    from harness import TinyBackbone, TinyHead
    from segzoo.models import SegmentationModel

    SegmentationModel(TinyBackbone(), TinyHead(3)).save(path)
    return str(path)


def test_eval_with_tta_writes_both_scores(make_folder, tmp_path, capsys):
    import json

    folder = make_folder(num_sources=4, copies=0, size=(32, 48))
    out = tmp_path / "eval"
    status, printed, err = segzoo(["eval", "--checkpoint", tiny_checkpoint(tmp_path / "m.keras"), "--data",
                                   str(folder), "--val_ratio", "0.5", "--latency_size", "32", "48",
                                   "--latency_runs", "2", "--grid_images", "1", "--output", str(out),
                                   "--flip", "--scales", "1.0", "1.5"], capsys)
    assert status == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    tta = metrics["tta"]
    assert 0 <= metrics["mean_iou"] <= 1 and 0 <= tta["mean_iou"] <= 1
    assert set(tta["per_class_iou"]) == set(metrics["per_class_iou"]) == {"background", "hole", "crack"}
    assert tta["settings"] == {"flip": True, "scales": [1.0, 1.5], "window": None, "overlap": 1 / 3}
    assert tta["forward_passes_per_image"] == 4 and metrics["latency"]["batch_size"] == 1
    assert "TTA IoU" in printed and "4 forward passes per image" in printed
    # what was scored: 2 of the 4 images, and why (a seeded split), and how to score all
    assert "scoring 2 images: split 'validation' of" in printed and "--split all takes all 4" in printed
    assert re.search(r"^images +2$", printed, re.M)
    assert "mean IoU with TTA" in (out / "report.html").read_text()


def test_eval_on_an_exported_runtime_scores_like_keras_and_says_which_ran(make_folder, tmp_path, capsys):
    import json

    folder = make_folder(num_sources=4, copies=0, size=(32, 48))
    checkpoint = tiny_checkpoint(tmp_path / "m.keras")
    scores = {}
    for runtime in ("keras", "onnx"):
        out = tmp_path / runtime
        status, printed, err = segzoo(["eval", "--checkpoint", checkpoint, "--data", str(folder), "--val_ratio", "0.5",
                                       "--latency_size", "32", "48", "--latency_runs", "2", "--grid_images", "1",
                                       "--output", str(out), "--runtime", runtime], capsys)
        assert status == 0, err
        scores[runtime] = json.loads((out / "metrics.json").read_text())
    assert scores["onnx"]["runtime"] == "onnx" and scores["keras"]["runtime"] == "keras"
    assert abs(scores["onnx"]["mean_iou"] - scores["keras"]["mean_iou"]) < 1e-3
    assert "runs, onnx)" in printed


def test_eval_on_int8_calibrates_on_the_training_images_given(make_folder, tmp_path, capsys):
    import json

    folder = str(make_folder(num_sources=4, copies=0, size=(32, 48)))
    checkpoint = tiny_checkpoint(tmp_path / "m.keras")
    common = ["eval", "--checkpoint", checkpoint, "--data", folder, "--val_ratio", "0.5", "--latency_size", "32",
              "48", "--latency_runs", "2", "--grid_images", "1", "--runtime", "onnx-int8"]
    status, _, err = segzoo([*common, "--output", str(tmp_path / "refused")], capsys)
    assert_one_message(status, err, "--calibration_data")
    assert not (tmp_path / "refused").exists()  # refused before any work
    status, printed, err = segzoo([*common, "--output", str(tmp_path / "int8"), "--calibration_data", folder], capsys)
    assert status == 0, err
    assert json.loads((tmp_path / "int8" / "metrics.json").read_text())["runtime"] == "onnx-int8"
    assert "runs, onnx-int8)" in printed


def test_live_prediction_on_int8_without_calibration_data_is_one_message(tmp_path, capsys):
    status, _, err = segzoo(["predict-video", "--checkpoint", str(tmp_path / "m.keras"), "--video",
                             str(tmp_path / "in.mp4"), "--output", str(tmp_path / "out.mp4"), "--runtime",
                             "litert-int8"], capsys)
    assert_one_message(status, err, "--calibration_data", "litert-int8")


def test_eval_refuses_bad_tta_flags_with_one_message(make_folder, tmp_path, capsys):
    missing = ["eval", "--checkpoint", str(tmp_path / "none.keras"), "--data", str(tmp_path / "missing"),
               "--output", str(tmp_path / "eval")]
    status, _, err = segzoo(missing + ["--scales", "0"], capsys)  # refused before anything is read
    assert_one_message(status, err, "--scales 0.0", "positive")
    status, _, err = segzoo(missing + ["--overlap", "0.5"], capsys)
    assert_one_message(status, err, "--overlap 0.5", "--window H W")
    folder = make_folder(num_sources=2, copies=0, size=(32, 48))
    status, _, err = segzoo(["eval", "--checkpoint", tiny_checkpoint(tmp_path / "m.keras"), "--data", str(folder),
                             "--val_ratio", "0.5", "--output", str(tmp_path / "eval"), "--window", "20", "24"],
                            capsys)
    assert_one_message(status, err, "--window 20 24", "size divisor 8", "e.g. 16 24")
