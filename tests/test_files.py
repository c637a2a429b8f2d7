"""segzoo.files: the output-folder rule every command shares (taken, a file, an input, overlapping an input)."""

import os

import pytest

from segzoo.errors import OutputExistsError
from segzoo.files import check_output_folder, is_within


def test_is_within(tmp_path):
    assert is_within(tmp_path / "a" / "b", tmp_path) and is_within(tmp_path, tmp_path)
    assert not is_within(tmp_path, tmp_path / "a")
    assert not is_within(tmp_path / "ab", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "link")
    assert is_within(tmp_path / "link" / "b", tmp_path / "a")  # links resolved


def test_an_output_folder_may_not_overlap_an_input_folder(tmp_path):
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    (images / "a.png").write_bytes(b"")
    with pytest.raises(OutputExistsError, match=r"inside the input folder .*images; .*Choose another output="):
        check_output_folder(images / "out", input_folders=(images,))
    with pytest.raises(OutputExistsError, match="around the input folder"):
        check_output_folder(tmp_path / "data", overwrite=True, input_folders=(None, images))
    with pytest.raises(OutputExistsError, match="inside the input folder"):
        check_output_folder(images, overwrite=True, input_folders=(images,))
    assert sorted(os.listdir(images)) == ["a.png"]
    beside = tmp_path / "data" / "out"
    assert check_output_folder(beside, input_folders=(images,)) == str(beside)


def test_an_output_folder_that_is_taken_or_a_file_is_refused(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="not empty. Pass overwrite=True"):
        check_output_folder(tmp_path / "taken")
    assert check_output_folder(tmp_path / "taken", overwrite=True) == str(tmp_path / "taken")
    with pytest.raises(OutputExistsError, match="not a folder"):
        check_output_folder(tmp_path / "file", overwrite=True)
    with pytest.raises(OutputExistsError, match="names an input"):
        check_output_folder(tmp_path / "empty", inputs=(str(tmp_path / "empty"),))
