"""The built wheel, installed into a fresh virtual environment, is a working product: the ``segzoo``
command answers with no third-party log lines, and its quickstart writes everything it promises.

The new environment finds segzoo's dependencies through a path entry to this environment's
site-packages (installing TensorFlow again would take minutes); segzoo itself comes only from
the wheel, and the commands run outside the checkout.
"""

import glob
import json
import math
import os
import subprocess
import sys
import sysconfig
import venv

import pytest

from harness import CHROMIUM, REPO_ROOT, page_images_in_browser

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(bin folder, environment variables, work folder)`` of a fresh venv holding the built wheel."""
    root = tmp_path_factory.mktemp("install")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "dist"), REPO_ROOT], check=True, timeout=600)
    (wheel,) = glob.glob(str(root / "dist" / "segzoo-*.whl"))
    venv.create(root / "env", with_pip=False)
    env_python = root / "env" / "bin" / "python"
    site = subprocess.run([str(env_python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "dependencies.pth"), "w", encoding="utf-8") as f:
        f.write(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_python), "install", "--no-deps", "-q",
                    wheel], check=True, timeout=600)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{root / 'env' / 'bin'}{os.pathsep}{env['PATH']}"
    work = root / "work"
    work.mkdir()
    return root / "env" / "bin", env, work


def run_segzoo(installed, *argv, timeout=600):
    bin_dir, env, work = installed
    return subprocess.run([str(bin_dir / "segzoo"), *argv], capture_output=True, text=True, cwd=work, env=env,
                          timeout=timeout)


def test_the_wheel_is_what_runs(installed):
    bin_dir, env, work = installed
    where = subprocess.run([str(bin_dir / "python"), "-c", "import segzoo; print(segzoo.__file__)"],
                           capture_output=True, text=True, cwd=work, env=env, check=True).stdout
    assert str(bin_dir.parent) in where and REPO_ROOT not in where
    shipped = subprocess.run([str(bin_dir / "python"), "-c", "from segzoo import recipes; "
                              "print(recipes.read_recipe('camvid/ddrnet23_slim')['preset'])"],
                             capture_output=True, text=True, cwd=work, env=env, check=True).stdout
    assert shipped.strip() == "ddrnet23_slim"  # the recipes are package data of the wheel


def test_every_subcommand_answers_help_without_third_party_lines(installed):
    from segzoo.cli import COMMANDS

    result = run_segzoo(installed, "--help")
    assert result.returncode == 0 and all(name in result.stdout for name in COMMANDS)
    for name in COMMANDS:
        result = run_segzoo(installed, name, "--help")
        assert result.returncode == 0 and f"usage: segzoo {name}" in result.stdout, result.stderr
        assert result.stderr == "", f"segzoo {name} --help printed: {result.stderr}"


def test_quickstart_fast_writes_everything_it_promises(installed):
    _, _, work = installed
    result = run_segzoo(installed, "quickstart", "--fast", "--out", "quick", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = work / "quick"
    for name in ("metrics.json", "report.html", "training_curves.png", "predictions.png", "per_class_iou.png",
                 "confusion_matrix.png", "prediction.webm", "model.tflite", "checkpoints/best.keras"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("mean_iou", "per_class_iou", "latency", "parameters", "gflops", "export", "history"):
        assert key in metrics, key
    assert metrics["export"]["class_agreement"] >= 0.999 and metrics["latency"]["runs"] == 10
    assert metrics["image_size"] == [128, 160] and metrics["crop_size"] == [96, 128]  # --fast trains on crops
    assert all(math.isfinite(v) for v in metrics["history"]["loss"])
    page = (out / "report.html").read_text()
    assert all(f'src="{name}"' in page for name in ("training_curves.png", "predictions.png", "prediction.webm"))
    assert "everything is in" in result.stdout
    said = result.stdout + result.stderr
    assert said.count("class agreement") == 1, said  # the export check is told once
    assert "Downloading and preparing" not in said and "Shuffling" not in said  # no TFDS lines: nothing downloads
    assert "cpu_feature_guard" not in result.stderr and "absl::InitializeLog" not in result.stderr
    if CHROMIUM is not None:
        loaded = page_images_in_browser(str(out))
        assert loaded["images"] == 4 and loaded["videos"] == 1 and loaded["broken"] == []
    again = run_segzoo(installed, "quickstart", "--fast", "--out", "quick")
    assert again.returncode == 2 and "already holds a quickstart report" in again.stderr
    assert "Traceback" not in again.stderr
