"""Tests of segzoo.data.pipeline: load() and load_info() on folders and built TFDS datasets."""

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from segzoo.data.folder import SegmentationFolder
from segzoo.data.io import DataError, write_image, write_label
from segzoo.data.online_augment import OnlineAugment
from segzoo.data.datasource import load_info
from segzoo.data.pipeline import load
from segzoo.data.tfds_builder import build_dataset

NO_COLOUR = dict(brightness=None, contrast=None, saturation=None, hue=None)


def _batches(dataset):
    return [(images.numpy(), labels.numpy()) for images, labels in dataset]


def _label_hashes(dataset):
    return sorted(hashlib.sha256(label.tobytes()).hexdigest()
                  for _, labels in _batches(dataset) for label in labels)


def _decoded_labels(image):
    """Class ids encoded in the red channel of the test images (20 + 100 * id)."""
    return np.round((image[..., 0] - 20) / 100).astype(np.int32)


def test_batches_have_the_model_dtypes_shapes_and_ranges(make_folder):
    folder = make_folder(num_sources=6, copies=1)
    batches = _batches(load(folder, batch_size=4, seed=1))
    assert sum(len(images) for images, _ in batches) == 10  # 5 train sources and their copies
    for images, labels in batches:
        assert images.dtype == np.float32 and images.shape[1:] == (64, 96, 3)
        assert labels.dtype == np.int32 and labels.shape == images.shape[:3]
        assert images.min() >= 0 and images.max() <= 255 and images.max() > 1
        np.testing.assert_array_equal(_decoded_labels(images), labels)


def test_load_info_gives_classes_and_split_sizes(make_folder, tmp_path):
    folder = make_folder(num_sources=10, copies=1)
    info = load_info(folder, val_ratio=0.2)
    assert info.class_names == ("background", "hole", "crack") and info.num_classes == 3
    assert info.colors[1] == (255, 0, 0) and info.ignore_index == 255
    assert info.split_sizes == {"train": 16, "validation": 2} and info.split_method == "ratio"
    build_dataset(folder, name="info", data_dir=tmp_path / "tfds", val_ratio=0.2)
    from_tfds = load_info("info", data_dir=tmp_path / "tfds")
    assert from_tfds.class_names == info.class_names and from_tfds.split_sizes == info.split_sizes


def test_folder_and_built_tfds_give_the_same_labels(make_folder, tmp_path):
    folder = make_folder(num_sources=8, copies=1)
    build_dataset(folder, name="same", data_dir=tmp_path / "tfds", val_ratio=0.25, seed=4)
    for split in ("train", "validation"):
        from_folder = load(folder, split=split, batch_size=1, shuffle=False, val_ratio=0.25, seed=4)
        from_tfds = load("same", split=split, batch_size=1, shuffle=False, data_dir=tmp_path / "tfds")
        assert _label_hashes(from_folder) == _label_hashes(from_tfds)
    # a shuffled, augmented TFDS source is reproducible too
    runs = [_batches(load("same", batch_size=4, image_size=(32, 48), augment=OnlineAugment(), shuffle_buffer=4,
                          deterministic=True, seed=2, data_dir=tmp_path / "tfds")) for _ in range(2)]
    for (a_images, a_labels), (b_images, b_labels) in zip(*runs, strict=True):
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_labels, b_labels)


def test_a_zip_of_the_folder_loads_like_the_folder(make_folder, tmp_path, zip_folder):
    folder = make_folder(num_sources=4, copies=1)
    archive = zip_folder(folder, tmp_path / "data.zip")
    options = dict(batch_size=2, shuffle=False, deterministic=True, val_ratio=0.25)
    for (a_images, a_labels), (b_images, b_labels) in zip(_batches(load(folder, **options)),
                                                          _batches(load(archive, **options)), strict=True):
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_labels, b_labels)


def test_a_folder_holding_one_zip_reads_the_zip_and_a_cvat_export_is_refused(make_folder, tmp_path, zip_folder):
    folder = make_folder(num_sources=4, copies=0)
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    archive = zip_folder(folder, manual_dir / "full_semantic.zip", top="full_semantic/")
    info = load_info(manual_dir, val_ratio=0.25)
    assert info.source == str(archive) and info.split_sizes == {"train": 3, "validation": 1}
    (images, labels), = _batches(load(manual_dir, split="validation", val_ratio=0.25))
    assert images.shape == (1, 64, 96, 3) and labels.shape == (1, 64, 96)
    (folder / "labelmap.txt").write_text("background:0,0,0::\n")  # now it looks like a CVAT export
    (folder / "classes.json").unlink()
    with pytest.raises(DataError, match="is a CVAT export.*import_cvat"):
        load(folder)


def test_image_sets_choose_the_folder_split(make_folder):
    folder = make_folder(num_sources=4, copies=1, subsets={"train": [0, 1, 2], "val": [3]})
    (images, labels), = _batches(load(folder, split="validation", batch_size=8))
    expected_image, expected_label = SegmentationFolder(folder).load("img_003")
    np.testing.assert_array_equal(images[0], expected_image)
    np.testing.assert_array_equal(labels[0], expected_label)


def test_resizing_keeps_labels_in_the_original_id_set(make_folder):
    folder = make_folder(num_sources=4, copies=0, num_classes=2)
    for images, labels in _batches(load(folder, batch_size=3, image_size=(45, 70), val_ratio=0.25)):
        assert images.shape[1:3] == (45, 70) and labels.shape[1:] == (45, 70)
        assert set(np.unique(labels)) <= {0, 1}


def test_flip_keeps_masks_aligned_and_flips_some_images(make_folder):
    folder = make_folder(num_sources=8, copies=0)
    augment = OnlineAugment(scale_range=(1.0, 1.0), **NO_COLOUR)
    in_order = dict(batch_size=4, shuffle=False, deterministic=True, val_ratio=0.25)
    plain = np.concatenate([i for i, _ in _batches(load(folder, **in_order))])
    batches = _batches(load(folder, image_size=(64, 96), augment=augment, **in_order))
    flipped = []
    for k, image in enumerate(np.concatenate([i for i, _ in batches])):
        assert np.array_equal(image, plain[k]) or np.array_equal(image, plain[k][:, ::-1])
        flipped.append(not np.array_equal(image, plain[k]))
    assert 0 < sum(flipped) < len(flipped)
    for images, labels in batches:
        np.testing.assert_array_equal(_decoded_labels(images), labels)


def test_colour_jitter_changes_images_only(make_folder):
    folder = make_folder(num_sources=8, copies=0)
    in_order = dict(batch_size=4, shuffle=False, deterministic=True, val_ratio=0.25)
    plain = _batches(load(folder, **in_order))
    jittered = _batches(load(folder, image_size=(64, 96), augment=OnlineAugment(scale_range=(1.0, 1.0)), **in_order))
    for (plain_images, plain_labels), (images, labels) in zip(plain, jittered, strict=True):
        for k in range(len(images)):
            assert np.array_equal(labels[k], plain_labels[k]) or np.array_equal(labels[k], plain_labels[k][:, ::-1])
            assert not np.array_equal(images[k], plain_images[k])
            assert not np.array_equal(images[k], plain_images[k][:, ::-1])
        assert images.min() >= 0 and images.max() <= 255


def test_scaled_and_cropped_masks_stay_aligned(make_folder):
    folder = make_folder(num_sources=8, copies=0)
    augment = OnlineAugment(scale_range=(0.6, 1.8), **NO_COLOUR)
    for images, labels in _batches(load(folder, batch_size=4, image_size=(64, 96), augment=augment,
                                        val_ratio=0.25)):
        labelled = labels != 255
        # bilinear image edges blend two classes; masks are never blended
        assert np.mean(_decoded_labels(images)[labelled] == labels[labelled]) > 0.9
        assert set(np.unique(labels)) <= {0, 1, 2, 255}


def test_padding_is_ignore_index_and_pad_value(make_folder):
    folder = make_folder(num_sources=4, copies=0)
    augment = OnlineAugment(scale_range=(0.5, 0.5), pad_value=0.0, **NO_COLOUR)
    for images, labels in _batches(load(folder, batch_size=3, image_size=(64, 96), augment=augment,
                                        val_ratio=0.25)):
        padded = labels == 255
        assert padded.mean() == pytest.approx(0.75)  # a half-size image in a full-size window
        np.testing.assert_array_equal(padded, np.all(images == 0, axis=-1))


def test_a_crop_size_cuts_a_window_of_the_image_scaled_relative_to_image_size(make_folder):
    folder = make_folder(num_sources=4, copies=0)
    kept = OnlineAugment(scale_range=(1.0, 1.0), crop_size=(32, 48), **NO_COLOUR)
    for images, labels in _batches(load(folder, batch_size=3, image_size=(64, 96), augment=kept, val_ratio=0.25)):
        assert images.shape == (3, 32, 48, 3) and labels.shape == (3, 32, 48)
        assert np.all(labels != 255)  # a window of the full-size image: nothing padded
        assert np.mean(_decoded_labels(images) == labels) > 0.9
    quarter = OnlineAugment(scale_range=(0.25, 0.25), crop_size=(32, 48), **NO_COLOUR)
    for _, labels in _batches(load(folder, batch_size=3, image_size=(64, 96), augment=quarter, val_ratio=0.25)):
        assert np.mean(labels == 255) == pytest.approx(0.75)  # 16x24 (a quarter of 64x96) in the 32x48 window
    with pytest.raises(ValueError, match="crop_size"):
        OnlineAugment(crop_size=(0, 48))


def test_deterministic_mode_reproduces_augmented_batches(make_folder):
    folder = make_folder(num_sources=6, copies=1)

    def run(seed):
        return _batches(load(folder, batch_size=4, image_size=(48, 64), augment=OnlineAugment(),
                             deterministic=True, seed=seed))

    first, second, other = run(3), run(3), run(4)
    for (a_images, a_labels), (b_images, b_labels) in zip(first, second, strict=True):
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_labels, b_labels)
    assert not np.array_equal(first[0][0], other[0][0])
    images = np.concatenate([i for i, _ in first])
    assert images.min() >= 0 and images.max() <= 255


def test_each_epoch_draws_fresh_augmentation_also_from_a_cache(make_folder):
    folder = make_folder(num_sources=5, copies=0)
    options = dict(batch_size=4, image_size=(32, 48), augment=OnlineAugment(), cache=True, shuffle=False,
                   deterministic=True, val_ratio=0.2)
    dataset = load(folder, **options)
    first_epoch, second_epoch = _batches(dataset), _batches(dataset)
    assert not np.array_equal(first_epoch[0][0], second_epoch[0][0])
    repeated = load(folder, repeat=True, drop_remainder=True, **options)
    batches = [images.numpy() for images, _ in repeated.take(3)]  # three batches from one epoch of four items
    assert all(b.shape == (4, 32, 48, 3) for b in batches) and not np.array_equal(batches[0], batches[1])


def test_a_repeated_stream_is_the_same_in_every_iterator(make_folder):
    """Keras's fit() reads a batch from an iterator that it drops: the next one must not depend on it."""
    folder = make_folder(num_sources=5, copies=0)
    dataset = load(folder, batch_size=2, image_size=(32, 48), augment=OnlineAugment(), repeat=True,
                   drop_remainder=True, deterministic=True, val_ratio=0.2)
    expected = _batches(dataset.take(5))  # 4 items: two and a half epochs
    dropped = iter(dataset)
    for _ in range(3):
        next(dropped)
    for (images, labels), (expected_images, expected_labels) in zip(_batches(dataset.take(5)), expected, strict=True):
        np.testing.assert_array_equal(images, expected_images)
        np.testing.assert_array_equal(labels, expected_labels)
    assert not np.array_equal(expected[0][0], expected[2][0])  # epoch 2: another order and other draws


def test_augment_needs_train_split_and_image_size(make_folder):
    folder = make_folder(num_sources=4, copies=0)
    with pytest.raises(ValueError, match="image_size"):
        load(folder, augment=OnlineAugment())
    with pytest.raises(ValueError, match="split='train'"):
        load(folder, split="validation", image_size=(32, 32), augment=OnlineAugment())


def _read_all(dataset):
    for _ in dataset:
        pass


def test_corrupt_image_is_named(make_folder):
    folder = make_folder(num_sources=4, copies=0)
    (folder / "rgb" / "img_001.png").write_bytes(b"not a png")
    with pytest.raises(tf.errors.InvalidArgumentError, match=str(folder / "rgb" / "img_001.png")):
        _read_all(load(folder, batch_size=1, val_ratio=0.25))


def test_image_and_label_of_different_sizes_are_both_named(make_folder):
    folder = make_folder(num_sources=4, copies=0)
    write_label(folder / "gt" / "img_002.png", np.zeros((60, 96), np.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        _read_all(load(folder, batch_size=1, val_ratio=0.25))
    assert str(folder / "rgb" / "img_002.png") in str(error.value)
    assert str(folder / "gt" / "img_002.png") in str(error.value)


def test_label_value_equal_to_num_classes_is_named_with_the_value(make_folder, tmp_path):
    # classes.json declares 2 classes; a label holds 2
    folder = make_folder("two", num_sources=4, copies=0, num_classes=2)
    label = np.zeros((64, 96), np.uint8)
    label[10, 10] = 2
    for index in range(4):
        write_label(folder / "gt" / f"img_{index:03d}.png", label)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"gt/img_00\d\.png: label values 2 \(1 pixels\)"):
        _read_all(load(folder, batch_size=1, num_classes=2, val_ratio=0.25))
    # classes.json declares 3 classes, training asks for 2: checked in the graph, folder and TFDS
    folder = make_folder("three", num_sources=4, copies=0, num_classes=3)
    train_file = str(folder / "gt" / "img_000.png")
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        _read_all(load(folder, batch_size=1, num_classes=2, val_ratio=0.25))
    assert "holds the label value] [2]" in str(error.value) and "num_classes=2" in str(error.value)
    assert "/gt/img_00" in str(error.value) and train_file[:-7] in str(error.value)
    build_dataset(folder, name="three", data_dir=tmp_path / "tfds", val_ratio=0.25)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"three:train id img_00\d\] \[holds the label value\] \[2\]"):
        _read_all(load("three", batch_size=1, num_classes=2, data_dir=tmp_path / "tfds"))


def test_images_of_different_sizes_cannot_be_batched_without_image_size(make_folder):
    folder = make_folder(num_sources=4, copies=0)
    write_image(folder / "rgb" / "img_001.png", np.zeros((32, 48, 3), np.uint8))
    write_label(folder / "gt" / "img_001.png", np.zeros((32, 48), np.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="different sizes cannot be batched") as error:
        _read_all(load(folder, batch_size=3, shuffle=False, val_ratio=0.25, deterministic=True))
    assert str(folder / "rgb" / "img_001.png") in str(error.value)
    assert str(folder / "rgb" / "img_000.png") in str(error.value)
    _read_all(load(folder, batch_size=1, val_ratio=0.25))  # one image per batch is fine
    _read_all(load(folder, batch_size=3, image_size=(32, 48), val_ratio=0.25))


def test_unknown_sources_and_mismatched_ignore_index_are_refused(make_folder, tmp_path):
    with pytest.raises(DataError, match="neither an existing folder"):
        load("no_such_dataset", data_dir=tmp_path)
    with pytest.raises(DataError, match="ignore_index=255, not 0"):
        load(make_folder(), ignore_index=0)


def test_the_all_split_reads_every_item_of_a_folder_and_a_tfds_build(make_folder, tmp_path):
    folder = make_folder(num_sources=5, copies=1)
    assert len(_label_hashes(load(folder, "all", batch_size=2, shuffle=False))) == 10
    build_dataset(folder, name="every_item", data_dir=tmp_path / "tfds")
    # validation keeps originals only: the copies of validation sources are in neither split
    tfds_items = _label_hashes(load("every_item", "all", batch_size=2, data_dir=tmp_path / "tfds", shuffle=False))
    info = load_info("every_item", data_dir=tmp_path / "tfds")
    assert len(tfds_items) == info.split_sizes["train"] + info.split_sizes["validation"] < 10
    with pytest.raises(ValueError, match="'all'"):
        load(folder, "holdout")
    with pytest.raises(DataError, match="the test split is empty"):
        load(folder, "test")  # no test list


def test_a_test_list_is_a_split_of_its_own_in_a_folder_and_a_tfds_build(make_folder, tmp_path):
    folder = make_folder(num_sources=5, copies=1, subsets={"train": [0, 1, 2], "val": [3], "test": [4]})
    assert len(_label_hashes(load(folder, "test", batch_size=2, shuffle=False))) == 1  # its copy is excluded
    assert load_info(folder).split_sizes == {"train": 6, "validation": 1, "test": 1}
    build_dataset(folder, name="with_test", data_dir=tmp_path / "tfds")
    info = load_info("with_test", data_dir=tmp_path / "tfds")
    assert info.split_sizes == {"train": 6, "validation": 1, "test": 1}
    assert len(_label_hashes(load("with_test", "all", batch_size=2, data_dir=tmp_path / "tfds"))) == 8


def test_the_last_batch_can_be_padded_with_ignored_items(make_folder):
    folder = make_folder(num_sources=5, copies=0)
    batches = _batches(load(folder, "all", batch_size=3, image_size=(64, 96), shuffle=False, pad_remainder=True))
    assert [labels.shape[0] for _, labels in batches] == [3, 3]
    images, labels = batches[-1]
    assert (labels[2] == 255).all() and (images[2] == 0).all() and (labels[:2] != 255).any()


def test_shards_together_give_the_unsharded_batches_item_for_item(make_folder):
    folder = make_folder(num_sources=10, copies=0, size=(64, 64))  # 8 training items: whole global batches
    options = dict(image_size=(48, 48), augment=OnlineAugment(), deterministic=True, seed=5, val_ratio=0.2,
                   repeat=True, drop_remainder=True)
    whole = [batch for batch in _batches(load(folder, batch_size=4, **options).take(3))]  # the 3rd: epoch 2
    shards = [_batches(load(folder, batch_size=2, num_shards=2, shard_index=i, **options).take(3)) for i in (0, 1)]
    for k, (images, labels) in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([shards[0][k][0], shards[1][k][0]]), images)
        np.testing.assert_array_equal(np.concatenate([shards[0][k][1], shards[1][k][1]]), labels)


@pytest.mark.parametrize("source", ["folder", "tfds"])
def test_pad_remainder_gives_every_shard_the_same_full_batches(make_folder, tmp_path, source):
    folder = make_folder(num_sources=9, copies=0, size=(32, 32))
    if source == "tfds":
        build_dataset(folder, name="shards", data_dir=tmp_path / "tfds", val_ratio=0.2)
    items = load_info(folder, val_ratio=0.2).split_sizes["train"]
    assert items % 6  # 3 shards x 2 images: the last batches need filling up
    options = dict(batch_size=2, image_size=(32, 32), shuffle=False, val_ratio=0.2, pad_remainder=True,
                   data_dir=tmp_path / "tfds")
    shards = [_batches(load(folder if source == "folder" else "shards", num_shards=3, shard_index=i, **options))
              for i in range(3)]
    full_batches = -(-items // 6)
    assert [len(batches) for batches in shards] == [full_batches] * 3
    assert all(len(images) == 2 for batches in shards for images, _ in batches)
    images = np.concatenate([batch[0] for batches in shards for batch in batches])
    labels = np.concatenate([batch[1] for batches in shards for batch in batches])
    filler = np.all(labels == 255, axis=(1, 2))
    assert filler.sum() == 6 * full_batches - items and np.all(images[filler] == 0)
    real = [hashlib.sha256(label.tobytes()).hexdigest() for label in labels[~filler]]
    assert sorted(real) == _label_hashes(load(folder, batch_size=1, shuffle=False, val_ratio=0.2))


def test_shard_and_pad_options_are_checked(make_folder):
    folder = make_folder(num_sources=4, copies=0)
    with pytest.raises(ValueError, match="shard_index"):
        load(folder, num_shards=2, shard_index=2)
    with pytest.raises(ValueError, match="pad_remainder"):
        load(folder, pad_remainder=True)
    with pytest.raises(ValueError, match="pad_remainder"):
        load(folder, image_size=(32, 32), pad_remainder=True, repeat=True)


def test_a_data_source_is_opened_and_split_once_for_every_pipeline(make_folder, monkeypatch):
    from segzoo.data import datasource

    folder = make_folder(num_sources=8, copies=0)
    opened = []
    real_open = datasource.open_dataset
    monkeypatch.setattr(datasource, "open_dataset", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    with datasource.open_source(folder, val_ratio=0.25, seed=3) as source:
        train = _batches(load(source, "train", batch_size=2, shuffle=False, deterministic=True))
        validation = _batches(load(source, "validation", batch_size=2))
        assert load_info(source) is source.info and source.info.split_sizes == {"train": 6, "validation": 2}
        with pytest.raises(ValueError, match="already open; val_ratio=0.5"):
            load(source, "train", val_ratio=0.5)
    assert len(opened) == 1
    assert sum(len(labels) for _, labels in train) == 6 and sum(len(labels) for _, labels in validation) == 2
    again = _batches(load(folder, "train", batch_size=2, shuffle=False, deterministic=True, val_ratio=0.25, seed=3))
    for (_, first), (_, second) in zip(train, again):  # the same split and order as from the path
        np.testing.assert_array_equal(first, second)
