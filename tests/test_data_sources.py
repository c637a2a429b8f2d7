"""Tests of segzoo.data.sources: one opener for every dataset form, and prepare_source."""

import json
import logging
import os

import numpy as np
import pytest

from segzoo.data.cvat import CvatDataset
from segzoo.data.folder import FolderWriter, SegmentationFolder, SegmentationZip
from segzoo.data.io import DataError, write_image
from segzoo.data.sources import open_dataset, prepare_source


@pytest.fixture
def folder(tmp_path):
    writer = FolderWriter(tmp_path / "folder", ["background", "hole"], [(0, 0, 0), (255, 0, 0)])
    writer.write("a", np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.uint8))
    return tmp_path / "folder"


def test_an_rgb_gt_folder_opens_as_a_segmentation_folder(folder):
    dataset = open_dataset(folder)
    assert isinstance(dataset, SegmentationFolder) and dataset.ids == ["a"]


def test_images_for_an_rgb_gt_folder_is_refused_not_ignored(folder, tmp_path):
    with pytest.raises(DataError, match="CVAT exports only"):
        open_dataset(folder, images=tmp_path)


def test_missing_and_unreadable_sources_are_errors(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError):
        open_dataset(tmp_path / "plain")


def _cvat_export(root):
    """A one-image CVAT "Segmentation mask 1.1" export written by hand: a red hole on black."""
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\nhole:255,0,0::\n")
    (root / "ImageSets" / "Segmentation" / "default.txt").write_text("a\n")
    mask = np.zeros((8, 8, 3), np.uint8)
    mask[2:4, 2:4] = (255, 0, 0)
    write_image(root / "SegmentationClass" / "a.png", mask)
    write_image(root / "JPEGImages" / "a.png", np.full((8, 8, 3), 90, np.uint8))
    return root


def test_every_form_of_an_rgb_gt_dataset_opens_with_the_same_items(folder, tmp_path, zip_folder):
    at_root = zip_folder(folder, tmp_path / "root.zip")
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    wrapped = zip_folder(folder, manual_dir / "full_semantic.zip", top="full_semantic/")
    for path, kind, root in ((folder, SegmentationFolder, folder), (at_root, SegmentationZip, at_root),
                             (manual_dir, SegmentationZip, wrapped)):
        with open_dataset(path) as dataset:
            assert type(dataset) is kind and dataset.root == str(root)
            assert dataset.ids == ["a"] and dataset.class_names == ["background", "hole"]
            np.testing.assert_array_equal(dataset.load("a")[1], np.ones((8, 8), np.uint8))


def test_cvat_exports_are_told_apart_from_rgb_gt_zips(tmp_path, zip_folder):
    export = _cvat_export(tmp_path / "export")
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    in_folder = zip_folder(export, manual_dir / "task.zip", top="task/")
    for path in (export, zip_folder(export, tmp_path / "export.zip"), manual_dir):
        with open_dataset(path, binary=True) as dataset:
            assert isinstance(dataset, CvatDataset) and dataset.class_names == ["background", "hole"]
            assert int(dataset.load("a")[1].sum()) == 4
        with pytest.raises(DataError, match="CVAT export.*import_cvat"):
            open_dataset(path, cvat=False)
    assert open_dataset(manual_dir).root == str(in_folder)


def test_options_for_cvat_only_and_archives_that_are_no_dataset_are_refused(folder, tmp_path, zip_folder):
    with pytest.raises(DataError, match="binary=True .* CVAT exports only"):
        open_dataset(folder, binary=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("nothing here")
    with pytest.raises(DataError, match=r"other.zip: neither an rgb/ \+ gt/ dataset \(classes.json\) nor a CVAT"):
        open_dataset(zip_folder(tmp_path / "other", tmp_path / "other.zip"))
    zip_folder(folder, tmp_path / "other" / "a.zip")
    zip_folder(folder, tmp_path / "other" / "b.zip")
    with pytest.raises(DataError, match=r"not a dataset.*found neither file and 2 zip archives \(a.zip, b.zip\)"):
        open_dataset(tmp_path / "other")


def test_prepare_source_passes_rgb_gt_forms_and_imports_cvat_exports_once(folder, tmp_path, zip_folder, caplog):
    archive = zip_folder(folder, tmp_path / "data.zip")
    assert prepare_source(archive) == str(archive) and prepare_source(folder) == str(folder)
    assert prepare_source("my_tfds_dataset") == "my_tfds_dataset"
    with pytest.raises(DataError, match="CVAT exports only"):
        prepare_source(archive, images=tmp_path)
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    zip_folder(_cvat_export(tmp_path / "export"), manual_dir / "task.zip")
    with pytest.raises(ValueError, match="import_dir"):
        prepare_source(manual_dir)
    with caplog.at_level(logging.INFO, logger="segzoo"):
        imported = prepare_source(manual_dir, binary=True, import_dir=tmp_path / "imported")
    assert SegmentationFolder(imported).class_names == ["background", "hole"]
    assert f"into {imported}." in caplog.text and ".partial-" not in caplog.text  # the folder, not its staging
    written = os.stat(os.path.join(imported, "classes.json")).st_mtime_ns
    assert prepare_source(manual_dir, binary=True, import_dir=tmp_path / "imported") == str(tmp_path / "imported")
    assert os.stat(os.path.join(imported, "classes.json")).st_mtime_ns == written  # reused
    prepare_source(manual_dir, import_dir=tmp_path / "imported")  # other options: imported anew, not reused
    with open(os.path.join(imported, "source.json")) as f:
        assert json.load(f)["binary"] is False
