"""segzoo.plots and segzoo.report: every figure is drawn, and report.html shows them all in a browser."""

import os

import numpy as np
import pytest

from harness import CHROMIUM, page_images_in_browser
from segzoo import plots, report as reports
from segzoo.data.io import read_image

NAMES = ["background", "crack", "hole"]
COLORS = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]


def fake_report():
    confusion = np.array([[90, 5, 5], [10, 80, 10], [0, 0, 0]])
    return {"mean_iou": 0.61, "pixel_accuracy": 0.85, "per_class_iou": {"background": 0.8, "crack": 0.42,
                                                                        "hole": None},
            "confusion_matrix": confusion.tolist(), "num_images": 2,
            "parameters": 5_700_000, "gflops": 3.1,
            "latency": {"median_ms": 30.5, "p90_ms": 33.0, "batch_size": 1, "input_shape": [240, 320, 3]},
            "machine": {"cpu": "test CPU", "vector_extensions": ["avx2"], "cores": 2}}


def rows(count=2, size=(24, 32)):
    rng = np.random.default_rng(0)
    picture = lambda: rng.integers(0, 255, (*size, 3), dtype=np.uint8)  # noqa: E731
    return [(picture(), picture(), picture(), rng.uniform(0, 1, size).astype("float32")) for _ in range(count)]


def test_training_curves_mark_the_best_epoch(tmp_path):
    history = {"loss": [1.0, 0.6, 0.5], "val_loss": [1.1, 0.7, 0.8], "mean_iou": [0.3, 0.5, 0.6],
               "val_mean_iou": [0.2, 0.55, 0.5]}
    path = plots.plot_training_curves(history, str(tmp_path / "curves.png"))
    image = read_image(path)
    assert image.shape[0] > 200 and image.shape[1] > 600
    # a drawn figure, not a blank canvas: many distinct colours (lines, ticks, text)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50


def test_every_figure_is_written(tmp_path):
    paths = [plots.plot_prediction_grid(rows(), str(tmp_path / "grid.png"), NAMES, COLORS),
             plots.plot_confusion_matrix(fake_report()["confusion_matrix"], NAMES, str(tmp_path / "cm.png")),
             plots.plot_per_class_iou(fake_report()["per_class_iou"], str(tmp_path / "iou.png"), 0.61)]
    for path in paths:
        assert read_image(path).shape[0] > 100
    with pytest.raises(ValueError, match="at least one row"):
        plots.plot_prediction_grid([], str(tmp_path / "none.png"))


def test_save_evaluation_writes_the_page_and_its_pictures(tmp_path):
    written = reports.save_evaluation(str(tmp_path), fake_report(), "a <test> run", rows(), COLORS)
    assert set(written) == {"metrics.json", "predictions.png", "per_class_iou.png", "confusion_matrix.png",
                            "report.html"}
    page = (tmp_path / "report.html").read_text()
    assert "a &lt;test&gt; run" in page and "0.6100" in page and "n/a" in page and "avx2" in page
    assert all(f'src="{name}"' in page for name in ("predictions.png", "per_class_iou.png", "confusion_matrix.png"))


def test_the_page_shows_tta_scores_beside_the_single_pass_ones(tmp_path):
    report = fake_report()
    report["tta"] = {"mean_iou": 0.65, "pixel_accuracy": 0.87,
                     "per_class_iou": {"background": 0.83, "crack": 0.47, "hole": None},
                     "settings": {"flip": True, "scales": [1.0, 1.5], "window": None, "overlap": 1 / 3},
                     "forward_passes_per_image": 4.0}
    reports.save_evaluation(str(tmp_path), report, "tta run", rows(), COLORS)
    page = (tmp_path / "report.html").read_text()
    assert "<th>mean IoU</th><td class=num>0.6100</td>" in page
    assert "<th>mean IoU with TTA</th><td class=num>0.6500</td>" in page
    assert "<th>pixel accuracy with TTA</th><td class=num>0.8700</td>" in page
    assert "<th>IoU with TTA</th>" in page
    assert "<th>crack</th><td class=num>0.4200</td><td class=num>0.4700</td>" in page
    assert "flip, scales 1 1.5: 4 forward passes per image" in page
    plain = reports.write_html_report(str(tmp_path / "plain.html"), "plain", fake_report())
    assert "TTA" not in open(plain, encoding="utf-8").read()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium); "
                                             ".ci/run installs it")
def test_report_page_loads_every_image_in_a_browser(tmp_path):
    plots.plot_training_curves({"loss": [1.0, 0.5]}, str(tmp_path / "training_curves.png"))
    reports.save_evaluation(str(tmp_path), fake_report(), "browser check", rows(), COLORS,
                            pictures=[("training curves", "training_curves.png")])
    result = page_images_in_browser(str(tmp_path))
    assert result["title"] == "browser check"
    assert result["images"] == 4 and result["broken"] == []
    # and a page with a missing picture is caught
    os.remove(tmp_path / "confusion_matrix.png")
    assert page_images_in_browser(str(tmp_path))["broken"] == ["confusion_matrix.png"]
