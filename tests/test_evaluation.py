"""segzoo.evaluation: IoU over a dataset, latency protocol, report, pictures."""

import os

import keras
import numpy as np
import pytest

from harness import TinyBackbone, TinyHead, random_images, random_labels
from segzoo import evaluation, postprocess
from segzoo.metrics import confusion_matrix, iou_from_confusion
from segzoo.models import SegmentationModel
from segzoo.tta import TestTimeAugmentation

NAMES = ["background", "hole", "crack"]


@pytest.fixture(scope="module")
def model():
    return SegmentationModel(TinyBackbone(), TinyHead(3))


def batches(count=3, size=(32, 48)):
    return [(random_images(2, *size, seed=i), random_labels(2, *size, 3, seed=10 + i)) for i in range(count)]


def test_evaluate_segmentation_matches_a_numpy_confusion_matrix(model):
    dataset = batches()
    labels = np.concatenate([y for _, y in dataset])
    labels[0, :4] = 255  # ignored pixels
    dataset[0] = (dataset[0][0], labels[:2])
    predictions = np.concatenate([keras.ops.convert_to_numpy(postprocess.classes(model(x))) for x, _ in dataset])
    expected = confusion_matrix(labels, predictions, 3)
    report = evaluation.evaluate_segmentation(model, dataset, NAMES, progress=False)
    assert report["confusion_matrix"] == expected.tolist()
    iou = iou_from_confusion(expected)
    assert report["mean_iou"] == pytest.approx(np.nanmean(iou), abs=1e-6)
    assert report["per_class_iou"]["hole"] == pytest.approx(iou[1], abs=1e-6)
    assert report["num_images"] == 6
    assert report["pixel_accuracy"] == pytest.approx(np.trace(expected) / expected.sum())


def test_images_of_any_size_are_padded_to_the_divisor_and_scored_at_their_own_size(model):
    dataset = batches(2, size=(30, 45))  # the tiny model needs multiples of 8
    padded = [np.pad(x, ((0, 0), (0, 2), (0, 3), (0, 0)), mode="edge") for x, _ in dataset]
    predictions = np.concatenate([keras.ops.convert_to_numpy(postprocess.classes(model(x)))[:, :30, :45]
                                  for x in padded])
    expected = confusion_matrix(np.concatenate([y for _, y in dataset]), predictions, 3)
    report = evaluation.evaluate_segmentation(model, dataset, NAMES, progress=False)
    assert report["confusion_matrix"] == expected.tolist() and np.sum(expected) == 4 * 30 * 45


def test_evaluate_segmentation_checks_class_names(model):
    with pytest.raises(ValueError, match="2 class names"):
        evaluation.evaluate_segmentation(model, batches(1), NAMES[:2])


def test_measure_latency_protocol(model):
    calls = []

    def forward(images):
        calls.append(images.shape)
        return model(images)

    result = evaluation.measure_latency(model, (32, 32, 3), batch_size=2, warmup=3, runs=7, forward=forward)
    assert len(calls) == 10 and calls[0] == (2, 32, 32, 3)
    assert 0 < result["min_ms"] <= result["median_ms"] <= result["p90_ms"]
    assert result["runs"] == 7 and result["warmup"] == 3 and result["batch_size"] == 2


def test_report_table_and_cost(model):
    report = evaluation.evaluation_report(model, batches(1), NAMES, (32, 32, 3), latency_runs=3, latency_warmup=1)
    assert report["parameters"] == model.count_params()
    assert report["gflops"] > 0 and report["latency"]["runs"] == 3
    table = evaluation.format_report(report)
    assert all(name in table for name in NAMES) and "mean IoU" in table and "ms median" in table
    assert "tta" not in report and "TTA" not in table
    scored = [line for line in table.splitlines() if line.startswith((*NAMES, "mean IoU", "pixel accuracy", "images"))]
    assert len(scored) == len(NAMES) + 3 and len({line.rindex(" ") for line in scored}) == 1  # one column of values


def test_report_with_tta_has_both_scores_and_what_tta_costs(model):
    tta = TestTimeAugmentation(flip=True, scales=(1.0, 1.5))
    report = evaluation.evaluation_report(model, batches(1), NAMES, (32, 32, 3), latency_runs=2, latency_warmup=1,
                                          tta=tta)
    assert report["mean_iou"] == evaluation.evaluate_segmentation(model, batches(1), NAMES, progress=False)["mean_iou"]
    scored = evaluation.evaluate_segmentation(model, batches(1), NAMES, progress=False, tta=tta)
    assert report["tta"] == {key: scored[key] for key in ("mean_iou", "per_class_iou", "pixel_accuracy", "settings",
                                                          "forward_passes_per_image")}
    assert report["tta"]["forward_passes_per_image"] == 4 and report["latency"]["runs"] == 2
    table = evaluation.format_report(report).splitlines()
    assert table[0].split() == ["class", "IoU", "TTA", "IoU"]
    mean = next(line for line in table if line.startswith("mean IoU")).split()
    assert mean[2:] == [f"{report['mean_iou']:.4f}", f"{report['tta']['mean_iou']:.4f}"]
    assert table[-1].split()[0] == "TTA" and "flip, scales 1 1.5: 4 forward passes per image" in table[-1]


def test_visualizations_are_side_by_side_panels(model, tmp_path):
    paths = evaluation.save_visualizations(model, batches(2, (32, 40)), [(0, 0, 0), (255, 0, 0), (0, 255, 0)],
                                           tmp_path / "vis", max_images=3)
    assert len(paths) == 3 and all(os.path.isfile(p) for p in paths)
    from segzoo.data.io import read_image

    assert read_image(paths[0]).shape == (32, 160, 3)


def test_vector_extensions_hidden_from_programs_are_told_apart(monkeypatch):
    """The kernel lists AVX-512; CPUID (as numpy reads it) does not offer it, e.g. under a CPUID mask."""
    import io

    from numpy._core import _multiarray_umath

    cpuinfo = "processor\t: 0\nflags\t\t: fpu sse avx2 fma avx512f avx512_vnni\n"
    monkeypatch.setattr(evaluation, "open", lambda path, **kwargs: io.StringIO(cpuinfo), raising=False)
    features = dict(_multiarray_umath.__cpu_features__, AVX2=True, FMA3=True, AVX512F=False, AVX512VNNI=False)
    monkeypatch.setattr(_multiarray_umath, "__cpu_features__", features)
    machine = {"vector_extensions": evaluation.cpu_vector_extensions(),
               "hidden_vector_extensions": evaluation.cpu_vector_extensions(hidden=True)}
    assert machine == {"vector_extensions": ["avx2", "fma"], "hidden_vector_extensions": ["avx512f", "avx512_vnni"]}
    assert evaluation.describe_vector_extensions(machine) == (
        "avx2, fma; avx512f, avx512_vnni listed by the kernel but hidden from programs")
    features.update(AVX512F=True, AVX512VNNI=True)
    assert evaluation.cpu_vector_extensions() == ["avx2", "fma", "avx512f", "avx512_vnni"]
    assert evaluation.cpu_vector_extensions(hidden=True) == []
