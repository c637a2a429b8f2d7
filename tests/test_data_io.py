"""Tests of segzoo.data.io: the folder and zip file readers and the helpers around them."""

import pickle
import zipfile

import numpy as np
import pytest

from segzoo.data.io import (
    DataError, FolderFiles, ZipFiles, find_root, open_files, read_image, write_image,
)


@pytest.fixture
def tree(tmp_path):
    """A folder with ``a.txt``, ``sub/b.txt``, ``sub/deeper/c.png`` and an empty folder."""
    root = tmp_path / "tree"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("first\n")
    (root / "sub" / "b.txt").write_text("second\n")
    write_image(root / "sub" / "deeper" / "c.png", np.full((4, 6, 3), 7, np.uint8))
    return root


def test_folder_and_zip_list_and_read_the_same_files(tree, tmp_path, zip_folder):
    archive = zip_folder(tree, tmp_path / "tree.zip")
    with zipfile.ZipFile(archive, "a") as z:  # folder entries and macOS forks are not files
        z.writestr("sub/", b"")
        z.writestr("__MACOSX/sub/._b.txt", b"fork")
    for files in (FolderFiles(tree), ZipFiles(archive)):
        assert files.names() == ["a.txt", "sub/b.txt", "sub/deeper/c.png"]
        assert files.names("sub") == files.names("sub/") == ["b.txt", "deeper/c.png"]
        assert files.names("missing") == []
        assert files.read_text("sub/b.txt") == "second\n"
        assert files.exists("a.txt") and not files.exists("sub")
        files.close()
    assert ZipFiles(archive).describe("sub/b.txt") == f"{archive}!sub/b.txt"
    assert FolderFiles(tree).describe("sub/b.txt") == str(tree / "sub" / "b.txt")


def test_a_zip_pickles_without_its_handle_and_reopens_after_close(tree, tmp_path, zip_folder):
    files = ZipFiles(zip_folder(tree, tmp_path / "tree.zip"))
    files.read("a.txt")  # the archive is open now
    copy = pickle.loads(pickle.dumps(files))
    assert copy._archive is None and copy.read("sub/b.txt") == b"second\n"
    files.close()
    assert files.read("a.txt") == b"first\n"
    files.close()
    copy.close()


def test_missing_files_and_members_are_named(tree, tmp_path, zip_folder):
    with pytest.raises(DataError, match="tree.zip!nothing.txt: cannot read this zip member"):
        ZipFiles(zip_folder(tree, tmp_path / "tree.zip")).read("nothing.txt")
    with pytest.raises(DataError, match="nothing.txt: no such file"):
        FolderFiles(tree).read("nothing.txt")
    (tree / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt: not UTF-8 text"):
        FolderFiles(tree).read_text("latin1.txt")


def test_open_files_takes_a_folder_or_a_zip(tree, tmp_path, zip_folder):
    assert isinstance(open_files(tree), FolderFiles)
    assert isinstance(open_files(zip_folder(tree, tmp_path / "tree.zip")), ZipFiles)
    with pytest.raises(DataError, match="nowhere: no such file or folder"):
        open_files(tmp_path / "nowhere")
    with pytest.raises(DataError, match="a.txt: cannot open as a zip archive"):
        open_files(tree / "a.txt")


def test_find_root_at_the_root_or_under_one_top_folder():
    assert find_root(["labelmap.txt", "x/labelmap.txt"], "labelmap.txt") == ""
    assert find_root(["task/labelmap.txt", "task/a.png", "readme"], "labelmap.txt") == "task/"
    assert find_root(["a/labelmap.txt", "b/labelmap.txt"], "labelmap.txt") is None
    assert find_root(["a/b/labelmap.txt"], "labelmap.txt") is None


def test_read_image_names_a_corrupt_file(tree):
    np.testing.assert_array_equal(read_image(tree / "sub" / "deeper" / "c.png"), np.full((4, 6, 3), 7, np.uint8))
    with pytest.raises(DataError, match="a.txt: cannot decode this file as an image"):
        read_image(tree / "a.txt")
