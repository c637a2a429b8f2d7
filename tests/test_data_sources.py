import numpy as np
import pytest

from segzoo.data.folder import FolderWriter, SegmentationFolder
from segzoo.data.io import DataError
from segzoo.data.sources import open_dataset


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
