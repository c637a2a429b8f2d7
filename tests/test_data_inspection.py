"""segzoo.data.inspection: dataset statistics, likely mistakes, class weights; segzoo inspect; the checks of training."""

import json
import logging
import os

import cv2
import numpy as np
import pytest

from segzoo import cli
from segzoo.data import inspect, make_cvat_sample, median_frequency_weights
from segzoo.data.inspection import check_training_data, format_report
from segzoo.training import TrainConfig, resolve_class_weights, train

dm = pytest.importorskip("datumaro")
from datumaro.components.media import Image as DmImage  # noqa: E402

SIZE = (32, 48)  # height, width
# background, two labels that occur and five that never do: what real exports found in repositories hold
LABELS = {"background": (0, 0, 0), "crack": (51, 221, 255), "hole": (250, 50, 83), "rust": (10, 200, 30),
          "stain": (200, 200, 0), "dent": (0, 0, 200), "chip": (120, 0, 120), "scratch": (0, 120, 120)}


def datumaro_export(root, mismatch=False):
    """A CVAT export written by datumaro as CVAT writes it: 8 frames, only ``f0`` annotated (crack and hole),
    ``f2`` and ``f3`` the same picture; ``f0`` in train.txt, the rest split between train and val.
    ``mismatch``: ``f1`` is annotated too, with a mask of another size than its image."""
    rng = np.random.default_rng(0)
    names = list(LABELS)
    items = []
    duplicate = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    for index in range(8):
        image = duplicate if index in (2, 3) else rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
        masks = []
        if index == 0 or (mismatch and index == 1):
            label = np.zeros(SIZE, np.uint8)
            label[4:20, 5:30] = 1
            label[22:30, 35:45] = 2
            masks = [dm.Mask(image=label == k, label=k, id=k) for k in (1, 2)]
        items.append(dm.DatasetItem(id=f"f{index}", subset="train" if index < 5 else "val", annotations=masks,
                                    media=DmImage.from_numpy(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), ext=".png")))
    dataset = dm.Dataset.from_iterable(items, categories=names)
    label_map = root.parent / f"{root.name}_labelmap.txt"
    label_map.write_text("".join(f"{n}:{r},{g},{b}::\n" for n, (r, g, b) in LABELS.items()))
    dataset.export(str(root), "voc_segmentation", save_media=True, apply_colormap=True, label_map=str(label_map))
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n" + "".join(
        f"{n}:{r},{g},{b}::\n" for n, (r, g, b) in sorted(LABELS.items())))  # CVAT's sorted order
    if mismatch:
        mask = root / "SegmentationClass" / "f1.png"
        cv2.imwrite(str(mask), cv2.resize(cv2.imread(str(mask)), (SIZE[1] * 2, SIZE[0] * 2),
                                          interpolation=cv2.INTER_NEAREST))
    return root


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return datumaro_export(tmp_path_factory.mktemp("cvat") / "export")


def test_median_frequency_weights():
    weights = median_frequency_weights([900, 90, 10, 0], [1000, 1000, 100, 0])
    assert weights == pytest.approx([0.1111, 1.1111, 1.0, 1.0], abs=1e-4)  # median frequency 0.1; absent: 1
    assert median_frequency_weights([0, 0], [0, 0]) == [1.0, 1.0]


def test_a_datumaro_export_with_unannotated_frames_and_absent_classes(export):
    report = inspect(export, samples=2, progress=False)
    assert [item_id for item_id, _ in report.samples] == ["f0", "f7"]  # annotated items first on the sheet
    assert report.kind == "cvat" and report.num_items == 8 and report.num_annotated == 1
    assert report.unannotated_ids == [f"f{i}" for i in range(1, 8)]
    assert report.image_sizes == {"48x32": 8}
    # background first, then labelmap.txt (CVAT's sorted) order
    assert report.class_names == ["background", "chip", "crack", "dent", "hole", "rust", "scratch", "stain"]
    c, h = report.class_names.index("crack"), report.class_names.index("hole")
    crack, hole = 16 * 25, 8 * 10
    assert report.class_pixels[[c, h]].tolist() == [crack, hole]
    assert report.class_pixels[0] == 8 * SIZE[0] * SIZE[1] - crack - hole
    assert report.class_images.tolist() == [8, 0, 1, 0, 1, 0, 0, 0]
    assert sorted(report.absent_classes) == sorted(["rust", "stain", "dent", "chip", "scratch"])
    assert report.duplicates == [["f2", "f3"]] and not report.size_mismatches and report.ignore_pixels == 0
    assert report.splits["train"]["ids"] == [f"f{i}" for i in range(5)] and len(report.splits["validation"]["ids"]) == 3
    warnings = " ".join(report.warnings())
    assert "7 of 8 images (88%) have no annotation" in warnings
    assert "5 of 8 declared classes never occur in the training split" in warnings and "scratch" in warnings
    assert "validation split (3 images) has no foreground" in warnings
    assert "identical images" in warnings
    frequency = np.array([report.class_pixels[0] - 3 * SIZE[0] * SIZE[1], crack, hole]) / np.array(
        [5 * SIZE[0] * SIZE[1], SIZE[0] * SIZE[1], SIZE[0] * SIZE[1]])
    expected = np.median(frequency) / frequency
    weights = report.class_weights
    assert [weights[0], weights[c], weights[h]] == pytest.approx(expected.tolist(), abs=1e-3)
    assert [w for i, w in enumerate(weights) if i not in (0, c, h)] == [1.0] * 5
    table = format_report(report)
    assert "scratch" in table and "(absent)" in table and "--class_weights auto" in table


def test_sizes_that_differ_are_reported_not_raised(tmp_path):
    report = inspect(datumaro_export(tmp_path / "export", mismatch=True), progress=False)
    assert report.size_mismatches == [("f1", SIZE, (SIZE[0] * 2, SIZE[1] * 2))]
    assert report.num_items == 8 and any("another size" in w for w in report.warnings())


def test_a_folder_a_zip_of_it_and_its_tfds_build_give_the_same_numbers(make_folder, zip_folder, tmp_path):
    from segzoo.data import build_dataset, open_dataset

    folder = make_folder(num_sources=4, copies=0, size=(32, 48))
    with open_dataset(folder) as reader:
        labels = [label for _, _, label in reader.items()]
    expected = np.bincount(np.concatenate([label.ravel() for label in labels]), minlength=3)
    reports = [inspect(folder, progress=False), inspect(zip_folder(folder, tmp_path / "data.zip"), progress=False)]
    build_dataset(folder, name="inspected", data_dir=tmp_path / "tfds", val_ratio=0.25)
    reports.append(inspect("inspected", data_dir=tmp_path / "tfds", progress=False))
    for report in reports:
        assert report.num_items == 4 and report.class_pixels.tolist() == expected.tolist()
        assert set(report.splits) == {"train", "validation"} and not report.absent_classes
    assert [r.kind for r in reports] == ["rgb_gt", "rgb_gt", "tfds"]
    assert reports[0].num_annotated == sum(bool((label > 0).any()) for label in labels)


def test_segzoo_inspect_writes_the_report_chart_and_contact_sheet(export, tmp_path, capsys):
    out = tmp_path / "inspect"
    assert cli.main(["inspect", str(export), "--output", str(out), "--samples", "3"]) == 0
    printed = capsys.readouterr().out
    assert "8 items, 1 annotated" in printed and "warnings:" in printed and "scratch" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["num_annotated"] == 1 and len(report["classes"]) == 8 and report["duplicates"] == [["f2", "f3"]]
    assert len(report["warnings"]) >= 3 and report["suggested_class_weights"].count(1.0) >= 5
    for name in ("class_frequency.png", "contact_sheet.png"):
        assert cv2.imread(str(out / name)) is not None
    assert cli.main(["inspect", str(export), "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    sample = make_cvat_sample(tmp_path / "sample", num_images=4, image_size=SIZE, video_frames=0, zip=True,
                              num_backgrounds=1)
    assert cli.main(["inspect", "--data", sample.export, "--output", str(tmp_path / "sample_report")]) == 0
    assert "4 items, 3 annotated" in capsys.readouterr().out  # --data, as train takes it, works too
    assert cli.main(["inspect", "--output", str(tmp_path / "none")]) == 2
    assert "segzoo inspect DATA, or segzoo inspect --data DATA" in capsys.readouterr().err


def test_class_weights_auto_and_the_warnings_at_the_start_of_training(export, tmp_path, caplog, monkeypatch):
    from harness import TinyBackbone, TinyHead
    from segzoo import presets
    from segzoo.models import SegmentationModel

    # the data checks and the loss are under test, not a preset: a tiny model keeps the run to seconds
    monkeypatch.setattr(presets, "from_name", lambda name, num_classes, **_: SegmentationModel(
        TinyBackbone(), TinyHead(num_classes)))
    assert resolve_class_weights(None) is None and resolve_class_weights((1, 2)) == (1.0, 2.0)
    with pytest.raises(ValueError, match="stands alone"):
        resolve_class_weights(("auto", 1.0))
    report = check_training_data(export, log=False)
    assert resolve_class_weights(("sqrt",), report) == pytest.approx([w ** 0.5 for w in report.class_weights],
                                                                     abs=1e-4)
    assert cli.build_parser("train").parse_args(["train", "--class_weights", "SQRT"]).class_weights == ["sqrt"]
    config = cli.dataclass_from_args(TrainConfig, cli.build_parser("train").parse_args(
        ["train", "--class_weights", "auto"]))
    assert config.class_weights == ("auto",)
    expected = check_training_data(export, log=False).class_weights
    with caplog.at_level(logging.WARNING, logger="segzoo"):
        model, _ = train(TrainConfig(data=str(export), preset="ddrnet23_slim", epochs=1, steps_per_epoch=1,
                                     batch_size=2, image_size=(32, 48), weights="none", class_weights=("auto",),
                                     checkpoint_dir=str(tmp_path / "run"), augment=False, progress=0))
    assert model.loss.class_weights == pytest.approx(expected)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "have no annotation" in logged and "never occur in the training split" in logged
    assert os.path.isfile(tmp_path / "run" / "best.keras")
