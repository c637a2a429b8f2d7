"""Tests of segzoo.data.folder helpers shared by every reader (the readers themselves: test_data_tfds, _sources)."""

import numpy as np
import pytest

from segzoo.data.folder import FolderWriter, check_same_size, list_files, read_subsets
from segzoo.data.io import DataError, FolderFiles, write_image


def test_read_subsets_reads_the_lists_directly_in_the_folder(tmp_path):
    lists = tmp_path / "ImageSets" / "Segmentation"
    (lists / "deeper").mkdir(parents=True)
    (lists / "train.txt").write_text("a\n\nb\na\n")
    (lists / "val.txt").write_text("c\n")
    (lists / "notes.md").write_text("not a list\n")
    (lists / "deeper" / "x.txt").write_text("d\n")
    assert read_subsets(FolderFiles(tmp_path), "ImageSets/Segmentation") == {"train": ["a", "b"], "val": ["c"]}
    assert read_subsets(FolderFiles(tmp_path), "missing") == {}


def test_a_label_of_another_size_is_refused_naming_both(tmp_path):
    image, label = np.zeros((6, 8, 3), np.uint8), np.zeros((6, 7), np.uint8)
    with pytest.raises(DataError, match="gt/a.png is 7x6 but its image rgb/a.png is 8x6"):
        check_same_size(image, label, "rgb/a.png", "gt/a.png")
    check_same_size(image, np.zeros((6, 8), np.uint8), "rgb/a.png", "gt/a.png")  # same size: no error
    writer = FolderWriter(tmp_path / "out", ["background", "hole"], [(0, 0, 0), (255, 0, 0)])
    with pytest.raises(DataError, match="the label of 'a' is 7x6 but its image 'a' is 8x6"):
        writer.write("a", image, label)
    assert not (tmp_path / "out" / "rgb").exists()


def test_list_files_maps_ids_to_paths_below_a_folder(tmp_path):
    write_image(tmp_path / "bg" / "x" / "one.JPG", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "bg" / "readme.txt").write_text("not an image")
    assert list_files(tmp_path / "bg", (".jpg",)) == {"x/one": str(tmp_path / "bg" / "x" / "one.JPG")}
