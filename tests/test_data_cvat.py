"""segzoo.data.cvat: CVAT "Segmentation mask 1.1" exports, made with datumaro as CVAT does, and by hand."""

import hashlib
import logging
import os
import pickle
import re
import shutil
import zipfile

import cv2
import numpy as np
import pytest

from segzoo.data import DataError, SegmentationFolder, import_cvat, parse_labelmap, read_cvat
from segzoo.errors import OutputExistsError

dm = pytest.importorskip("datumaro")
from datumaro.components.media import Image as DmImage  # noqa: E402

# Labels a user created in CVAT; CVAT adds "background" and sorts: Car, apple, background, tree.
USER_LABELS = {"apple": (10, 200, 30), "Car": (250, 50, 83), "tree": (51, 221, 255)}
READER_NAMES = ["background", "Car", "apple", "tree"]  # background first, then labelmap.txt order
SIZE = (48, 64)  # height, width


def _labelmap_text(labels):
    # CVAT writes the lines sorted with Python's case-sensitive sorted().
    lines = [f"{name}:{r},{g},{b}::" for name, (r, g, b) in sorted(labels.items())]
    return "# label:color_rgb:parts:actions\n" + "\n".join(lines) + "\n"


def _make_items(rng):
    """id -> (image RGB uint8, class ids in READER_NAMES order or None for no annotation)."""
    items = {}
    for index, item_id in enumerate(["img_0", "img_1", "batch_1/img_2", "batch_1/img_3"]):
        image = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
        label = None
        if index < 3:  # img_3 has no annotation at all: no PNG, listed in default.txt
            label = np.zeros(SIZE, dtype=np.uint8)
            for class_id in range(1, len(READER_NAMES)):
                y, x = rng.integers(0, SIZE[0] - 10), rng.integers(0, SIZE[1] - 10)
                label[y:y + int(rng.integers(3, 10)), x:x + int(rng.integers(3, 10))] = class_id
        items[item_id] = (image, label)
    return items


def _datumaro_export(root, items, save_images=True):
    """Export ``items`` with the datumaro call CVAT makes; write labelmap.txt in CVAT's order."""
    # Upstream datumaro takes category 0 as background: keep background first for it.
    categories = ["background"] + list(USER_LABELS)
    dataset_items = []
    for item_id, (image, label) in items.items():
        masks = [] if label is None else [
            dm.Mask(image=label == class_id, label=categories.index(READER_NAMES[class_id]), id=class_id)
            for class_id in range(1, len(READER_NAMES)) if (label == class_id).any()]
        dataset_items.append(dm.DatasetItem(
            id=item_id, subset="default", annotations=masks,
            media=DmImage.from_numpy(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), ext=".png")))
    dataset = dm.Dataset.from_iterable(dataset_items, categories=categories)
    # A dict label map is sorted by datumaro, which then paints the background in the colour of
    # the first label ("Car"); a label map file keeps its order, as CVAT's fork does.
    label_map = root.parent / "datumaro_labelmap.txt"
    label_map.write_text("".join(f"{n}:{r},{g},{b}::\n" for n, (r, g, b) in
                                 {"background": (0, 0, 0), **USER_LABELS}.items()))
    dataset.export(str(root), "voc_segmentation", save_media=save_images, apply_colormap=True,
                   label_map=str(label_map))
    label_map.unlink()
    (root / "labelmap.txt").write_text(_labelmap_text({"background": (0, 0, 0), **USER_LABELS}))
    return root


def _tree_hash(path):
    """Hash of every file name and content below ``path`` (or of the file ``path``)."""
    digest = hashlib.sha256()
    paths = [path] if os.path.isfile(path) else sorted(
        os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    for file in paths:
        digest.update(os.path.relpath(file, path).encode())
        with open(file, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


@pytest.fixture
def items():
    return _make_items(np.random.default_rng(0))


@pytest.fixture
def export(tmp_path, items):
    return _datumaro_export(tmp_path / "export", items)


@pytest.mark.parametrize("as_zip", [False, True])
def test_every_label_id_is_recovered(tmp_path, items, export, as_zip, zip_folder):
    path = zip_folder(export, tmp_path / "export.zip") if as_zip else export
    dataset = read_cvat(path)
    assert (export / "labelmap.txt").read_text().splitlines()[1].startswith("Car:")  # background not first
    assert dataset.class_names == READER_NAMES
    assert dataset.colors == [(0, 0, 0)] + [USER_LABELS[n] for n in READER_NAMES[1:]]
    assert dataset.num_classes == 4 and dataset.ignore_index == 255
    assert dataset.ids == sorted(items) and len(dataset) == 4
    assert dataset.subsets() == {"default": list(items)}
    assert dataset.unlabelled_ids == ["batch_1/img_3"] and dataset.num_unlabelled == 1
    for item_id, image, label in dataset.items():
        expected_image, expected_label = items[item_id]
        np.testing.assert_array_equal(image, expected_image)
        expected = np.zeros(SIZE, np.uint8) if expected_label is None else expected_label
        assert label.dtype == np.uint8 and label.shape == SIZE
        np.testing.assert_array_equal(label, expected)
    assert ("export.zip!JPEGImages/batch_1/img_2.png" if as_zip else
            os.path.join("JPEGImages", "batch_1", "img_2.png")) in dataset.image_path("batch_1/img_2")


def test_zip_with_a_wrapping_folder_is_read(tmp_path, export, zip_folder):
    wrapped = zip_folder(export, tmp_path / "wrapped.zip", top="my_task/")
    assert read_cvat(wrapped).ids == read_cvat(export).ids


def test_images_folder_for_exports_without_images(tmp_path, items, zip_folder):
    export = _datumaro_export(tmp_path / "export", items, save_images=False)
    (export / "JPEGImages").rmdir()  # datumaro leaves it empty; CVAT's zip has no such folder
    with pytest.raises(DataError, match="images="):
        read_cvat(export)
    originals = tmp_path / "originals"
    for index, (item_id, (image, _)) in enumerate(items.items()):
        ext = [".PNG", ".png", ".Png", ".PNG"][index]  # video tasks give frame_000000.PNG
        path = originals / (item_id + ext)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    dataset = read_cvat(zip_folder(export, tmp_path / "export.zip"), images=originals)
    assert dataset.ids == sorted(items)
    image, label = dataset.load("batch_1/img_2")
    np.testing.assert_array_equal(image, items["batch_1/img_2"][0])
    np.testing.assert_array_equal(label, items["batch_1/img_2"][1])
    assert dataset.image_path("img_0").endswith("img_0.PNG")


def test_unlisted_images_are_left_out_with_a_warning(export, caplog):
    # CVAT lists no image whose only annotations are tags or points; its image is still saved.
    shutil.copy(export / "JPEGImages" / "img_0.png", export / "JPEGImages" / "tagged_only.png")
    with caplog.at_level(logging.INFO, logger="segzoo.data.cvat"):
        dataset = read_cvat(export)
    assert "tagged_only" not in dataset.ids and dataset.unlisted_ids == ["tagged_only"]
    assert any("left out 1 image" in r.message and "tagged_only" in r.message for r in caplog.records)
    assert any("1 of 4 images have no mask" in r.message for r in caplog.records)


def test_binary_maps_every_foreground_label_to_one(items, export):
    dataset = read_cvat(export, binary=True)
    assert dataset.class_names == ["background", "foreground"] and dataset.num_classes == 2
    assert dataset.colors[0] == (0, 0, 0)
    _, label = dataset.load("img_1")
    np.testing.assert_array_equal(label, (items["img_1"][1] > 0).astype(np.uint8))


def test_binary_keeps_the_name_of_a_single_foreground_label(tmp_path):
    export = _hand_export(tmp_path / "export", {"hole": (250, 50, 83), "background": (0, 0, 0)})
    assert read_cvat(export, binary=True).class_names == ["background", "hole"]


def _hand_export(root, labels, masks=None, images=None, listed=None):
    """Write an export by hand: labelmap (in the given order), masks and images id -> RGB array."""
    root.mkdir(parents=True)
    lines = [f"{name}:{r},{g},{b}::" for name, (r, g, b) in labels.items()]
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n" + "\n".join(lines) + "\n")
    masks = {} if masks is None else masks
    images = {"a": np.full((8, 8, 3), 90, np.uint8)} if images is None else images
    for folder, arrays in (("SegmentationClass", masks), ("JPEGImages", images)):
        for item_id, array in arrays.items():
            (root / folder).mkdir(exist_ok=True)
            cv2.imwrite(str(root / folder / f"{item_id}.png"), cv2.cvtColor(array, cv2.COLOR_RGB2BGR))
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    listed = sorted(images) if listed is None else listed
    (root / "ImageSets" / "Segmentation" / "default.txt").write_text("".join(i + "\n" for i in listed))
    return root


def test_background_is_found_by_colour_then_by_name(tmp_path):
    mask = np.full((8, 8, 3), 9, np.uint8)
    mask[:, :4] = (1, 2, 3)
    # "background" with its own colour and no black label: found by name, its colour is unannotated.
    named = _hand_export(tmp_path / "named", {"Tree": (1, 2, 3), "background": (9, 9, 9)}, {"a": mask})
    dataset = read_cvat(named)
    assert dataset.class_names == ["background", "Tree"]
    np.testing.assert_array_equal(dataset.load("a")[1][0], [1, 1, 1, 1, 0, 0, 0, 0])
    # The first black label is the background, whatever its name.
    black = _hand_export(tmp_path / "black", {"car": (5, 5, 5), "nothing": (0, 0, 0), "x": (7, 7, 7)})
    assert read_cvat(black).class_names == ["nothing", "car", "x"]


def test_parse_labelmap():
    text = "# label:color_rgb:parts:actions\n\ntraffic light:250,50,83::\nbackground:0,0,0::\n"
    assert parse_labelmap(text) == [("traffic light", (250, 50, 83)), ("background", (0, 0, 0))]
    with pytest.raises(DataError, match=r"labelmap.txt, line 2: cannot parse 'car:250,50::'"):
        parse_labelmap("# header\ncar:250,50::\n")


def test_import_cvat_writes_a_folder_that_reads_back_identically(tmp_path, export, zip_folder):
    before = _tree_hash(export)
    output = import_cvat(zip_folder(export, tmp_path / "export.zip"), tmp_path / "out")
    folder, dataset = SegmentationFolder(output), read_cvat(export)
    assert folder.class_names == dataset.class_names and folder.colors == dataset.colors
    assert folder.ids == dataset.ids and folder.subsets() == dataset.subsets()
    for item_id in dataset.ids:
        for got, expected in zip(folder.load(item_id), dataset.load(item_id)):
            np.testing.assert_array_equal(got, expected)
    assert _tree_hash(export) == before
    with pytest.raises(OutputExistsError, match="not empty"):
        import_cvat(export, output)
    assert import_cvat(export, output, binary=True, overwrite=True) == output
    assert SegmentationFolder(output).class_names == ["background", "foreground"]


def test_import_cvat_refuses_an_output_inside_or_around_the_export(tmp_path, export):
    before = _tree_hash(export)
    with pytest.raises(OutputExistsError, match="inside the input folder"):
        import_cvat(export, export / "out")
    with pytest.raises(OutputExistsError, match="around the input folder"):
        import_cvat(export, tmp_path, overwrite=True)
    assert _tree_hash(export) == before


def _corrupt_image(export):
    (export / "JPEGImages" / "img_1.png").write_bytes(b"not a png at all")
    return "JPEGImages/img_1.png", "cannot decode"


def _mask_size_differs(export):
    path = export / "SegmentationClass" / "img_1.png"
    cv2.imwrite(str(path), cv2.resize(cv2.imread(str(path)), (32, 24), interpolation=cv2.INTER_NEAREST))
    return "SegmentationClass/img_1.png", "is 32x24 but its image"


def _mask_without_image(export):
    (export / "JPEGImages" / "batch_1" / "img_2.png").unlink()
    return "SegmentationClass/batch_1/img_2.png", "have no image"


def _unknown_colour(export):
    path = export / "SegmentationClass" / "img_1.png"
    mask = cv2.imread(str(path))
    mask[:2, :3] = (3, 2, 1)  # BGR of (1, 2, 3)
    cv2.imwrite(str(path), mask)
    return "SegmentationClass/img_1.png", r"\(1, 2, 3\) \(6 pixels\)"


def _duplicated_colour(export):
    text = (export / "labelmap.txt").read_text().replace("tree:51,221,255", "tree:250,50,83")
    (export / "labelmap.txt").write_text(text)
    return "labelmap.txt", "share the colour"


def _no_labelmap(export):
    (export / "labelmap.txt").unlink()
    return "labelmap.txt", "missing"


def _no_items(export):
    for name in ("SegmentationClass", "SegmentationObject", "ImageSets"):
        shutil.rmtree(export / name)
    return None, "has no items"


@pytest.mark.parametrize("as_zip", [False, True])
@pytest.mark.parametrize("breakage", [_corrupt_image, _mask_size_differs, _mask_without_image, _unknown_colour,
                                      _duplicated_colour, _no_labelmap, _no_items])
def test_bad_exports_fail_clearly_and_change_nothing(tmp_path, export, breakage, as_zip, zip_folder):
    file, problem = breakage(export)
    source = zip_folder(export, tmp_path / "export.zip") if as_zip else export
    file = os.fspath(source) if file is None else ("export.zip!" if as_zip else "export/") + file
    before = _tree_hash(source)
    (tmp_path / "existing_empty").mkdir()
    for output in ("out", "existing_empty"):
        with pytest.raises(DataError) as error:
            import_cvat(source, tmp_path / output)
        message = str(error.value).replace(os.sep, "/")
        assert file in message and re.search(problem, message), message
    assert _tree_hash(source) == before
    assert not (tmp_path / "out").exists() and not os.listdir(tmp_path / "existing_empty")
    assert not [n for n in os.listdir(tmp_path) if "partial" in n]


def test_zip_members_outside_the_export_are_rejected(tmp_path, export, zip_folder):
    path = zip_folder(export, tmp_path / "export.zip")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("JPEGImages/../../evil.png", b"x")
    before = _tree_hash(path)
    with pytest.raises(DataError, match=r"export.zip!JPEGImages/\.\./\.\./evil.png: unsafe zip member"):
        import_cvat(path, tmp_path / "out")
    assert _tree_hash(path) == before and not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.png").exists()


def test_zip_dataset_pickles_and_loads_after_unpickling(tmp_path, items, export, zip_folder):
    dataset = read_cvat(zip_folder(export, tmp_path / "export.zip"))
    dataset.load("img_0")  # opens the archive; the handle must not travel
    copy = pickle.loads(pickle.dumps(dataset))
    image, label = copy.load("img_1")
    np.testing.assert_array_equal(image, items["img_1"][0])
    np.testing.assert_array_equal(label, items["img_1"][1])


def test_an_export_goes_through_augmentation_tfds_and_the_pipeline_with_every_label_id(tmp_path, items, export,
                                                                                      zip_folder):
    """CVAT's exporter -> import -> offline augmentation -> TFDS build -> tf.data: ids recovered exactly."""
    from segzoo.data import AugmentConfig, augment_dataset, build_dataset, load

    augmented = augment_dataset(read_cvat(zip_folder(export, tmp_path / "export.zip")), tmp_path / "augmented",
                                AugmentConfig(copies=2, seed=1), workers=1)
    build_dataset(augmented, name="cvat_chain", data_dir=tmp_path / "tfds", val_ratio=0.25, seed=0)
    expected = {hashlib.sha256(image.tobytes()).hexdigest(): (np.zeros(SIZE, np.uint8) if label is None else label)
                for image, label in items.values()}
    originals, copies = 0, 0
    for split in ("train", "validation"):
        for image, label in load("cvat_chain", split, batch_size=1, shuffle=False, data_dir=tmp_path / "tfds"):
            image = image.numpy()[0].astype(np.uint8)
            label = label.numpy()[0]
            key = hashlib.sha256(image.tobytes()).hexdigest()
            if key in expected:
                np.testing.assert_array_equal(label, expected[key])
                originals += 1
            else:
                assert set(np.unique(label)) <= {0, 1, 2, 3, 255}
                copies += 1
    assert originals == len(items) and copies > 0
