"""Tests of segzoo.data.tfds_builder (and the zip reading it relies on)."""

import json
import os
import pickle
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from segzoo.data.folder import SegmentationFolder, SegmentationZip, source_id
from segzoo.data.io import DataError, write_image, write_label
from segzoo.data.tfds_builder import CLI_BUILDER_DIR, build_dataset

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _examples(builder, split):
    """id -> (image, label (H, W)) of a split."""
    return {ex["id"].decode(): (ex["image"], ex["label"][..., 0])
            for ex in tfds.as_numpy(builder.as_dataset(split=split))}


def _assert_reproduces(builder, folder_path):
    folder = SegmentationFolder(folder_path)
    meta = builder.info.metadata
    assert meta["class_names"] == folder.class_names
    assert [tuple(c) for c in meta["colors"]] == folder.colors
    assert meta["ignore_index"] == 255 and meta["num_classes"] == folder.num_classes
    seen = []
    for split in builder.info.splits:
        for item_id, (image, label) in _examples(builder, split).items():
            expected_image, expected_label = folder.load(item_id)
            np.testing.assert_array_equal(label, expected_label)
            np.testing.assert_array_equal(image, expected_image)
            seen.append(item_id)
    return seen


def test_build_from_a_folder_reproduces_every_item_and_the_metadata(make_folder, tmp_path):
    folder = make_folder(num_sources=10, copies=1)
    builder = build_dataset(folder, name="from_folder", data_dir=tmp_path / "tfds")
    seen = _assert_reproduces(builder, folder)
    meta = builder.info.metadata
    assert sorted(seen + meta["excluded"]) == SegmentationFolder(folder).ids
    assert meta["split_method"] == "ratio" and meta["val_ratio"] == 0.1 and meta["seed"] == 0
    # readable back from the files alone, without segzoo's class
    reloaded = tfds.builder("from_folder", data_dir=tmp_path / "tfds")
    assert reloaded.info.metadata["class_names"] == ["background", "hole", "crack"]
    assert reloaded.info.splits["validation"].num_examples == 1


def test_the_build_shows_one_bar_per_split_and_none_of_tfds_download_lines(make_folder, tmp_path, capfd):
    folder = make_folder(num_sources=10, copies=1)
    shown_before = tfds.core.utils.tqdm_utils._active
    build_dataset(folder, name="quiet", data_dir=tmp_path / "tfds")
    said = "".join(capfd.readouterr())
    assert "TFDS quiet train" in said and "TFDS quiet validation" in said  # segzoo's bars, per split
    for tfds_line in ("Downloading and preparing", "downloaded and prepared", "Shuffling", "Generating splits"):
        assert tfds_line not in said, said
    assert tfds.core.utils.tqdm_utils._active == shown_before  # TFDS's own setting is restored


def test_a_built_split_is_described_with_the_ratio_it_was_built_with(make_folder, tmp_path):
    from segzoo.data.datasource import open_source, split_description

    folder = make_folder(num_sources=8, copies=1)
    build_dataset(folder, name="described", data_dir=tmp_path / "tfds", val_ratio=0.25)
    with open_source("described", data_dir=tmp_path / "tfds") as source:  # opened with the default ratio, 0.1
        said = split_description(source, "validation")
    assert said.startswith("2 images: split 'validation' of described") and "val_ratio=0.25" in said


def test_ratio_split_keeps_copies_with_their_source_and_validation_has_originals(make_folder, tmp_path):
    folder = make_folder(num_sources=10, copies=2)
    builder = build_dataset(folder, name="ratio", data_dir=tmp_path / "tfds", val_ratio=0.2, seed=5)
    train, validation = _examples(builder, "train"), _examples(builder, "validation")
    assert len(validation) == 2 and all(source_id(i) == i for i in validation)
    assert not {source_id(i) for i in train} & set(validation)
    assert len(train) == 8 * 3 and len(builder.info.metadata["excluded"]) == 4


def test_the_same_seed_gives_the_same_split(make_folder, tmp_path):
    folder = make_folder(num_sources=12, copies=0)
    splits = [set(_examples(build_dataset(folder, name=name, data_dir=tmp_path / "tfds", val_ratio=0.25, seed=seed),
                            "validation"))
              for name, seed in (("first", 7), ("second", 7), ("third", 8))]
    assert splits[0] == splits[1] and splits[0] != splits[2]


def test_image_sets_decide_the_splits(make_folder, tmp_path):
    folder = make_folder(num_sources=5, copies=1, subsets={"train": [0, 1, 2], "val": [3, 4]})
    builder = build_dataset(folder, name="listed", data_dir=tmp_path / "tfds")
    assert builder.info.metadata["split_method"] == "image_sets"
    assert set(_examples(builder, "validation")) == {"img_003", "img_004"}
    assert set(_examples(builder, "train")) == {f"img_{i:03d}{s}" for i in range(3) for s in ("", "_aug001")}


def test_a_zip_in_the_manual_directory_with_a_top_folder(make_folder, tmp_path, zip_folder):
    folder = make_folder(num_sources=4, copies=0, image_format=".jpg")
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    zip_folder(folder, manual_dir / "full_semantic.zip", top="full_semantic/")
    builder = build_dataset(manual_dir, name="zipped", data_dir=tmp_path / "tfds", val_ratio=0.25)
    assert builder.info.metadata["source"] == str(manual_dir / "full_semantic.zip")
    folder_reader = SegmentationFolder(folder)
    for split in builder.info.splits:
        for item_id, (image, label) in _examples(builder, split).items():
            expected_image, expected_label = folder_reader.load(item_id)
            np.testing.assert_array_equal(label, expected_label)
            # JPEG bytes are stored as they are; TensorFlow's decoder rounds a little differently
            assert np.abs(image.astype(int) - expected_image).mean() < 3


def test_a_zip_reader_pickles_without_its_open_archive(make_folder, tmp_path, zip_folder):
    folder = make_folder(num_sources=2, copies=0)
    with SegmentationZip(zip_folder(folder, tmp_path / "data.zip", top="data/")) as reader:
        copy = pickle.loads(pickle.dumps(reader))
        np.testing.assert_array_equal(copy.load("img_001")[1], SegmentationFolder(folder).load("img_001")[1])
        assert copy.label_path("img_001") == f"{tmp_path / 'data.zip'}!data/gt/img_001.png"
        copy.close()


def test_a_photo_rotated_by_exif_is_stored_as_segzoo_reads_it(make_folder, tmp_path):
    PIL_Image = pytest.importorskip("PIL.Image")
    folder = make_folder(num_sources=4, copies=0, image_format=".jpg")
    pixels, _ = SegmentationFolder(folder).load("img_002")
    photo = PIL_Image.fromarray(np.ascontiguousarray(pixels[::-1, ::-1]))  # stored upside down ...
    exif = photo.getexif()
    exif[0x0112] = 3  # ... with the EXIF orientation "rotate by 180 degrees" that CVAT applies
    photo.save(folder / "rgb" / "img_002.jpg", quality=95, exif=exif.tobytes())
    builder = build_dataset(folder, name="exif", data_dir=tmp_path / "tfds", val_ratio=0.25)
    image, = [image for split in builder.info.splits
              for item_id, (image, _) in _examples(builder, split).items() if item_id == "img_002"]
    assert np.abs(image.astype(int) - SegmentationFolder(folder).load("img_002")[0]).mean() < 3
    assert np.abs(image.astype(int) - pixels).mean() < 8  # compressed twice, upright


def test_two_names_build_in_one_process_into_one_data_dir(make_folder, tmp_path):
    folder = make_folder(num_sources=4, copies=0)
    data_dir = tmp_path / "tfds"
    build_dataset(folder, name="alpha", data_dir=data_dir, val_ratio=0.25)
    build_dataset(folder, name="beta", data_dir=data_dir, val_ratio=0.25, version="2.0.0")
    assert os.path.isdir(data_dir / "alpha" / "1.0.0") and os.path.isdir(data_dir / "beta" / "2.0.0")
    assert tfds.builder("beta", data_dir=data_dir).info.splits["train"].num_examples == 3


def test_rebuilding_reuses_checks_and_overwrites(make_folder, tmp_path):
    folder = make_folder(num_sources=4, copies=0)
    data_dir = tmp_path / "tfds"
    first = build_dataset(folder, name="again", data_dir=data_dir, val_ratio=0.25)
    info_file = os.path.join(first.data_path, "dataset_info.json")
    written = os.stat(info_file).st_mtime_ns
    build_dataset(folder, name="again", data_dir=data_dir, val_ratio=0.25)
    assert os.stat(info_file).st_mtime_ns == written  # reused, not rewritten
    with pytest.raises(DataError, match="seed 0 -> 1"):
        build_dataset(folder, name="again", data_dir=data_dir, val_ratio=0.25, seed=1)
    image, label = np.zeros((64, 96, 3), np.uint8), np.zeros((64, 96), np.uint8)
    write_image(folder / "rgb" / "new.png", image)
    write_label(folder / "gt" / "new.png", label)
    with pytest.raises(DataError, match="num_items 4 -> 5"):
        build_dataset(folder, name="again", data_dir=data_dir, val_ratio=0.25)
    rebuilt = build_dataset(folder, name="again", data_dir=data_dir, val_ratio=0.25, seed=1, overwrite=True)
    assert rebuilt.info.metadata["seed"] == 1 and rebuilt.info.metadata["num_items"] == 5
    assert sum(split.num_examples for split in rebuilt.info.splits.values()) == 5


def test_bad_names_and_versions_are_refused(make_folder, tmp_path):
    with pytest.raises(ValueError, match="not valid"):
        build_dataset(make_folder(), name="My-Data", data_dir=tmp_path)
    with pytest.raises(ValueError):
        build_dataset(make_folder("other"), name="ok", version="one", data_dir=tmp_path)


@pytest.mark.parametrize("damage, named", [
    ("corrupt", ["rgb/img_001.png"]),
    ("size", ["rgb/img_001.png", "gt/img_001.png"]),
    ("value", ["gt/img_001.png", "2 (1 pixels)"]),
])
def test_bad_items_stop_the_build_naming_the_files(make_folder, tmp_path, damage, named):
    folder = make_folder(num_sources=4, copies=0, num_classes=2)
    if damage == "corrupt":
        (folder / "rgb" / "img_001.png").write_bytes(b"\x89PNG not really")
    elif damage == "size":
        write_label(folder / "gt" / "img_001.png", np.zeros((60, 96), np.uint8))
    else:
        label = np.zeros((64, 96), np.uint8)
        label[5, 5] = 2
        write_label(folder / "gt" / "img_001.png", label)
    with pytest.raises(DataError) as error:
        build_dataset(folder, name="broken", data_dir=tmp_path / "tfds", val_ratio=0.25)
    for text in named:
        assert str(folder / text) in str(error.value) or text in str(error.value)


@pytest.mark.parametrize("member, kind", [("../evil.png", "'..'"), ("/abs/evil.png", "absolute"),
                                          ("link.png", "symbolic link")])
def test_unsafe_zip_members_are_refused(make_folder, tmp_path, member, kind, zip_folder):
    archive = zip_folder(make_folder(num_sources=2, copies=0), tmp_path / "data.zip")
    with zipfile.ZipFile(archive, "a") as z:
        info = zipfile.ZipInfo(member)
        if kind == "symbolic link":
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, b"x")
    with pytest.raises(DataError, match=f"{member}.*{kind}" if kind != "'..'" else r"climbs out"):
        build_dataset(archive, name="unsafe", data_dir=tmp_path / "tfds")


def test_a_manual_directory_with_two_zips_is_refused(make_folder, tmp_path, zip_folder):
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    folder = make_folder(num_sources=2, copies=0)
    zip_folder(folder, manual_dir / "a.zip")
    zip_folder(folder, manual_dir / "b.zip")
    with pytest.raises(DataError, match=r"2 zip archives \(a.zip, b.zip\)"):
        build_dataset(manual_dir, name="two", data_dir=tmp_path / "tfds")


def test_tfds_build_cli_with_a_zip_in_manual_dir(make_folder, tmp_path, zip_folder):
    folder = make_folder(num_sources=4, copies=1)
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    zip_folder(folder, manual_dir / "full_semantic.zip")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, SEGZOO_VAL_RATIO="0.25", SEGZOO_SPLIT_SEED="3")
    # The real `tfds` launcher (the dev extra installs what it imports on start: apache-beam, mlcroissant).
    command = [os.path.join(os.path.dirname(sys.executable), "tfds"), "build", CLI_BUILDER_DIR,
               "--manual_dir", str(manual_dir), "--data_dir", str(tmp_path / "tfds")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "tfds" / "segzoo_dataset" / "1.0.0" / "metadata.json") as f:
        meta = json.load(f)
    assert meta["class_names"] == ["background", "hole", "crack"]
    assert meta["val_ratio"] == 0.25 and meta["seed"] == 3
    builder = tfds.builder("segzoo_dataset", data_dir=tmp_path / "tfds")
    assert _assert_reproduces(builder, folder)
