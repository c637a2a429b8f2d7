import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from segzoo import files
from segzoo.constants import IGNORE_INDEX
from segzoo.data import augment
from segzoo.data.augment import OPERATIONS, OVERLAYS_DIR, AugmentConfig, augment_dataset, augment_pair
from segzoo.data.folder import FolderWriter, SegmentationFolder, augmented_id
from segzoo.data.io import DataError, read_image, read_label, write_image
from segzoo.errors import OutputExistsError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEIGHT, WIDTH = 64, 96
CLASSES = ["background", "hole", "crack"]
COLORS = [(0, 0, 0), (250, 50, 83), (51, 221, 255)]
IDS = ["a", "b", "c", "batch/d"]


def textured_image(seed):
    """A smooth colour gradient plus noise: every operation visibly changes it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([x * 2.5, y * 3.5, (x + y) * 1.5], axis=-1)
    return np.clip(base + rng.integers(0, 40, (HEIGHT, WIDTH, 3)), 0, 255).astype(np.uint8)


def sample_label(index):
    label = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.rectangle(label, (5 + index, 8), (30 + index, 28), 1, thickness=-1)
    cv2.ellipse(label, (65, 40), (14, 9 + index), 0, 0, 360, 2, thickness=-1)
    cv2.rectangle(label, (40, 50), (50, 60), 1, thickness=-1)
    return label


def only(operation, **overrides):
    """A config that applies ``operation`` to every copy and nothing else."""
    probs = {f"{op}_prob": float(op == operation) for op in OPERATIONS}
    return AugmentConfig(**{**probs, **overrides})


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "source"
    writer = FolderWriter(root, CLASSES, COLORS)
    for index, item_id in enumerate(IDS):
        writer.write(item_id, textured_image(index), sample_label(index))
    writer.write_subsets({"train": ["a", "b", "batch/d"], "val": ["c"]})
    return SegmentationFolder(root)


@pytest.fixture
def bg_path(tmp_path):
    directory = tmp_path / "backgrounds"
    write_image(directory / "green.png", np.full((50, 70, 3), (10, 200, 30), np.uint8))
    write_image(directory / "blue.jpg", np.full((120, 200, 3), (20, 40, 220), np.uint8))
    return directory


def read_tree(root):
    """Relative path -> bytes of every file below ``root``."""
    files = {}
    for dirpath, _, filenames in os.walk(root):
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def centroid(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


# --------------------------------------------------------------------------- the dataset


def test_output_reads_back_with_originals_copies_subsets_and_overlays(source, tmp_path):
    copies = 2
    output = augment_dataset(source, tmp_path / "out", AugmentConfig(copies=copies, seed=3), workers=1)
    result = SegmentationFolder(output)

    expected = sorted(IDS + [augmented_id(i, k) for i in IDS for k in range(1, copies + 1)])
    assert result.ids == expected
    assert len(result) == (copies + 1) * len(source)
    assert result.class_names == CLASSES and result.colors == COLORS
    assert result.subsets() == {
        "train": ["a", "a_aug001", "a_aug002", "b", "b_aug001", "b_aug002",
                  "batch/d", "batch/d_aug001", "batch/d_aug002"],
        "val": ["c", "c_aug001", "c_aug002"],
    }
    for item_id in IDS:
        image, label = source.load(item_id)
        out_image, out_label = result.load(item_id)
        np.testing.assert_array_equal(out_image, image)
        np.testing.assert_array_equal(out_label, label)
        for k in range(1, copies + 1):
            copy_image, copy_label = result.load(augmented_id(item_id, k))
            assert copy_image.shape == image.shape and copy_label.shape == label.shape
            assert not (np.array_equal(copy_image, image) and np.array_equal(copy_label, label))
            assert set(np.unique(copy_label)) <= {0, 1, 2, IGNORE_INDEX}

    overlays = os.path.join(output, OVERLAYS_DIR)
    for item_id in expected:
        assert os.path.isfile(os.path.join(overlays, item_id + ".jpg"))
    assert not any("overlay" in path for path in read_tree(os.path.join(output, "rgb")))


def test_jpeg_images_and_a_source_ignore_index_other_than_255(source, tmp_path):
    class IgnoresOne:
        """The dataset protocol with ignore_index 1: its pixels become 255 in the output."""

        def __init__(self, folder):
            self.folder = folder
            self.class_names, self.colors, self.ids = folder.class_names, folder.colors, folder.ids
            self.ignore_index = 1

        def load(self, item_id):
            return self.folder.load(item_id)

        def subsets(self):
            return {}

        def image_path(self, item_id):
            return self.folder.image_path(item_id)

    output = augment_dataset(IgnoresOne(source), tmp_path / "out", only("jitter", copies=1),
                             workers=1, image_format=".jpg")
    assert sorted(os.listdir(os.path.join(output, "rgb")))[0] == "a.jpg"
    label = read_label(os.path.join(output, "gt", "a.png"))
    np.testing.assert_array_equal(label == IGNORE_INDEX, source.load("a")[1] == 1)
    assert not os.path.isdir(os.path.join(output, "ImageSets"))


def test_reproducible_whatever_the_workers_and_seed_dependent(source, bg_path, tmp_path):
    config = AugmentConfig(copies=2, seed=7, background_prob=0.5)
    one = read_tree(augment_dataset(source, tmp_path / "one", config, bg_path=bg_path, workers=1))
    two = read_tree(augment_dataset(source, tmp_path / "two", config, bg_path=bg_path, workers=2))
    assert one.keys() == two.keys() and len(one) > 3 * len(IDS) * 3
    assert all(one[path] == two[path] for path in one)

    other = read_tree(augment_dataset(source, tmp_path / "other", dataclasses.replace(config, seed=8),
                                      bg_path=bg_path, workers=1))
    copies = [path for path in one if "_aug" in path and path.startswith("rgb")]
    assert any(one[path] != other[path] for path in copies)
    originals = [os.path.join("rgb", i + ".png") for i in IDS]
    assert all(one[path] == other[path] for path in originals)


# --------------------------------------------------------------------------- one operation at a time


@pytest.mark.parametrize("border_mode", ["reflect", "constant"])
def test_geometric_warps_never_invent_label_values(border_mode):
    # Classes 0 and 2 side by side: bilinear interpolation would invent 1 on their border.
    label = np.zeros((HEIGHT, WIDTH), np.uint8)
    label[:, WIDTH // 2:] = 2
    cv2.circle(label, (20, 30), 12, 2, thickness=-1)
    image = textured_image(0)
    matrix = cv2.getRotationMatrix2D((WIDTH / 2, HEIGHT / 2), 30, 1.0)
    assert 1 in cv2.warpAffine(label, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)

    config = AugmentConfig(shift_prob=1.0, rotation_prob=1.0, crop_prob=1.0, blur_prob=0.0, jitter_prob=0.0,
                           object_color_prob=0.0, border_mode=border_mode)
    rng = np.random.default_rng(0)
    values = set()
    for _ in range(10):
        out_image, out_label = augment_pair(image, label, config, rng)
        assert out_image.dtype == np.uint8 and out_label.dtype == np.uint8
        values |= set(np.unique(out_label).tolist())
    expected = {0, 2, IGNORE_INDEX} if border_mode == "constant" else {0, 2}
    assert values == expected


def test_object_color_changes_pixels_inside_objects_only():
    image, label = textured_image(1), sample_label(0)
    out_image, out_label = augment_pair(image, label, only("object_color"), np.random.default_rng(0))
    np.testing.assert_array_equal(out_label, label)
    outside = label == 0
    np.testing.assert_array_equal(out_image[outside], image[outside])
    changed = np.any(out_image != image, axis=-1)
    assert changed[~outside].mean() > 0.5
    # Both rectangles of class 1 are separate objects: each draws its own shift.
    shift = out_image.astype(int) - image.astype(int)
    first, second = shift[10:26, 8:28].mean(axis=(0, 1)), shift[52:58, 42:48].mean(axis=(0, 1))
    assert np.abs(first - second).max() > 2


def test_background_replacement_keeps_objects_and_replaces_background(bg_path):
    image, label = textured_image(2), sample_label(1)
    backgrounds = [read_image(bg_path / "green.png")]
    out_image, out_label = augment_pair(image, label, only("background"), np.random.default_rng(0), backgrounds)
    np.testing.assert_array_equal(out_label, label)
    objects = label != 0
    np.testing.assert_array_equal(out_image[objects], image[objects])
    assert np.all(out_image[~objects] == (10, 200, 30))


def test_background_paths_of_any_size_are_fitted_to_the_image(bg_path):
    image, label = textured_image(2), sample_label(1)
    backgrounds = [str(bg_path / "blue.jpg")]
    out_image, _ = augment_pair(image, label, only("background"), np.random.default_rng(0), backgrounds)
    background = out_image[label == 0].astype(int)
    assert np.abs(background - (20, 40, 220)).max() <= 3  # JPEG


@pytest.mark.parametrize("operation", ["rotation", "shift", "crop"])
def test_geometric_operations_move_label_and_image_together(operation):
    # A red square on black: the image's red area must follow the label's object.
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    label = np.zeros((HEIGHT, WIDTH), np.uint8)
    label[16:32, 56:76] = 1
    image[label == 1] = (255, 0, 0)
    config = only(operation, border_mode="constant")
    out_image, out_label = augment_pair(image, label, config, np.random.default_rng(1))
    moved = centroid(out_label == 1)
    assert np.abs(moved - centroid(label == 1)).max() > 1.5
    np.testing.assert_allclose(centroid(out_image[..., 0] > 127), moved, atol=0.75)
    if operation == "crop":
        assert (out_label == 1).sum() > (label == 1).sum()


def test_rotation_by_the_configured_angle():
    label = np.zeros((HEIGHT, WIDTH), np.uint8)
    label[28:36, 70:86] = 1
    config = only("rotation", rotation_degrees=(30.0, 30.0), border_mode="constant")
    _, out_label = augment_pair(textured_image(0), label, config, np.random.default_rng(0))
    center = np.array([(WIDTH - 1) / 2, (HEIGHT - 1) / 2])
    before, after = centroid(label == 1) - center, centroid(out_label == 1) - center
    angle = np.degrees(np.arctan2(after[1], after[0]) - np.arctan2(before[1], before[0]))
    assert abs(abs(angle) - 30) < 2


def test_shift_is_a_whole_pixel_translation():
    image, label = textured_image(3), sample_label(2)
    config = only("shift", shift_fraction=(0.1, 0.1), border_mode="constant")
    out_image, out_label = augment_pair(image, label, config, np.random.default_rng(0))
    dx, dy = round(0.1 * WIDTH), round(0.1 * HEIGHT)
    for dx_sign in (-1, 1):
        for dy_sign in (-1, 1):
            expected = np.full_like(label, IGNORE_INDEX)
            target = expected[max(0, dy * dy_sign): HEIGHT + min(0, dy * dy_sign),
                              max(0, dx * dx_sign): WIDTH + min(0, dx * dx_sign)]
            target[...] = label[max(0, -dy * dy_sign): HEIGHT + min(0, -dy * dy_sign),
                                max(0, -dx * dx_sign): WIDTH + min(0, -dx * dx_sign)]
            if np.array_equal(expected, out_label):
                kept = out_label != IGNORE_INDEX
                assert np.all(out_image[~kept] == 0)
                return
    pytest.fail("the shifted label is no whole-pixel translation of the source")


def test_jitter_changes_colours_only():
    image, label = textured_image(4), sample_label(0)
    out_image, out_label = augment_pair(image, label, only("jitter"), np.random.default_rng(0))
    np.testing.assert_array_equal(out_label, label)
    assert np.mean(out_image != image) > 0.5


def test_blur_smooths_and_brightens_without_leaving_uint8():
    image, label = textured_image(5), sample_label(0)
    rng = np.random.default_rng(0)
    smooth, out_label = augment_pair(image, label, only("blur", blur_brightness=(0, 0)), rng)
    np.testing.assert_array_equal(out_label, label)

    def roughness(array):
        return np.abs(np.diff(array.astype(int), axis=1)).mean()

    assert roughness(smooth) < 0.5 * roughness(image)
    bright, _ = augment_pair(image, label, only("blur", blur_brightness=(50, 100)), rng)
    assert bright.dtype == np.uint8
    assert 40 < bright.astype(int).mean() - image.astype(int).mean() <= 100
    assert bright.max() == 255  # clipped, not wrapped round


def test_a_copy_that_cannot_differ_is_an_error():
    blank_image, label = np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.uint8)
    with pytest.raises(DataError, match="unchanged"):
        augment_pair(blank_image, label, only("rotation"), np.random.default_rng(0))  # uniform: rotates to itself


def test_an_item_without_objects_gets_no_object_operation(bg_path):
    """Background replacement of a frame with no mask would replace every pixel: copies of different frames
    came out as the same background image (found as duplicates across splits)."""
    image, empty = textured_image(3), np.zeros((HEIGHT, WIDTH), np.uint8)
    green = read_image(bg_path / "green.png")
    config = AugmentConfig(**{f"{op}_prob": float(op in ("background", "jitter")) for op in OPERATIONS})
    copies = [augment_pair(image, empty, config, np.random.default_rng(seed), [green])[0] for seed in range(4)]
    # each copy is the frame jittered (its texture), never the uniform background jittered
    assert all(copy.reshape(-1, 3).std(axis=0).min() > 5 for copy in copies)
    assert not any(np.array_equal(copy, image) for copy in copies)
    with pytest.raises(DataError, match="no object.*background.*enable another"):
        augment_pair(image, empty, only("background"), np.random.default_rng(0), [green])
    labelled = augment_pair(image, sample_label(0), only("background"), np.random.default_rng(0), [green])[0]
    assert np.all(labelled[sample_label(0) == 0] == (10, 200, 30))  # with objects it still applies


@pytest.mark.parametrize("overrides, match", [
    ({"rotation_prob": 1.5}, "rotation_prob"),
    ({"blur_kernel": (6, 9)}, "odd"),
    ({"rotation_degrees": (45, 10)}, "low <= high"),
    ({"crop_scale": (0.5, 1.2)}, "crop_scale"),
    ({"border_mode": "wrap"}, "border_mode"),
    ({**{f"{op}_prob": 0.0 for op in OPERATIONS}}, "every operation"),
])
def test_config_validation(overrides, match):
    with pytest.raises(ValueError, match=match):
        AugmentConfig(**overrides)


# --------------------------------------------------------------------------- errors


def test_non_empty_output_is_refused_and_left_alone(source, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="not empty"):
        augment_dataset(source, output, AugmentConfig(copies=1), workers=1)
    assert os.listdir(output) == ["notes.txt"]


def test_overwrite_replaces_an_earlier_run_completely(source, tmp_path):
    output = tmp_path / "out"
    augment_dataset(source, output, AugmentConfig(copies=2), workers=1)
    augment_dataset(source, output, AugmentConfig(copies=1), workers=1, overwrite=True)
    assert len(SegmentationFolder(output)) == 2 * len(IDS)
    assert len(read_tree(output / OVERLAYS_DIR)) == 2 * len(IDS)


def test_overwrite_leaves_nothing_of_the_earlier_output(source, tmp_path):
    output = tmp_path / "out"
    augment_dataset(source, output, AugmentConfig(copies=2), workers=1)
    (output / "notes.txt").write_text("stale")
    (output / "rgb" / "stale.png").write_bytes(b"stale")
    (output / "stale_folder").mkdir()
    fresh = read_tree(augment_dataset(source, tmp_path / "fresh", AugmentConfig(copies=1), workers=1))
    augment_dataset(source, output, AugmentConfig(copies=1), workers=1, overwrite=True)
    assert read_tree(output) == fresh
    assert not (output / "stale_folder").exists()
    assert not [name for name in os.listdir(tmp_path) if name.startswith(files.PARTIAL_PREFIX)]


def fail_at_third_item(monkeypatch, tmp_path):
    """Make the 3rd item written raise, after checking the first two went to a staging folder only."""
    written = []

    def augment_item(job, item_id):
        if len(written) == 2:
            staging = [name for name in os.listdir(tmp_path) if name.startswith(files.PARTIAL_PREFIX)]
            assert len(staging) == 1 and len(read_tree(tmp_path / staging[0] / "gt")) == 4
            raise OSError("disk full")
        written.append(item_id)
        return original(job, item_id)

    original = augment._augment_item
    monkeypatch.setattr(augment, "_augment_item", augment_item)


def test_an_error_part_way_leaves_no_output(source, tmp_path, monkeypatch):
    fail_at_third_item(monkeypatch, tmp_path)
    with pytest.raises(OSError, match="disk full"):
        augment_dataset(source, tmp_path / "out", AugmentConfig(copies=1), workers=1)
    assert sorted(os.listdir(tmp_path)) == ["source"]


def test_an_error_part_way_of_an_overwrite_leaves_the_earlier_output_intact(source, tmp_path, monkeypatch):
    output = augment_dataset(source, tmp_path / "out", AugmentConfig(copies=2), workers=1)
    before = read_tree(output)
    fail_at_third_item(monkeypatch, tmp_path)
    with pytest.raises(OSError, match="disk full"):
        augment_dataset(source, output, AugmentConfig(copies=1), workers=1, overwrite=True)
    assert read_tree(output) == before
    assert sorted(os.listdir(tmp_path)) == ["out", "source"]


def test_workers_write_into_the_staging_folder(source, tmp_path, monkeypatch):
    def moved_in_at_the_end(path, folder=False):
        assert folder and not os.path.exists(path)
        with files.atomic_write(path, folder) as staging:
            yield staging
            assert len(SegmentationFolder(staging)) == 2 * len(IDS) and not os.path.exists(path)

    monkeypatch.setattr(augment, "atomic_write", contextlib.contextmanager(moved_in_at_the_end))
    output = augment_dataset(source, tmp_path / "out", AugmentConfig(copies=1), workers=2)
    assert len(SegmentationFolder(output)) == 2 * len(IDS)


def test_output_overlapping_the_source_is_refused(source):
    with pytest.raises(OutputExistsError, match="around the input folder"):
        augment_dataset(source, source.root, AugmentConfig(copies=1), workers=1, overwrite=True)
    with pytest.raises(OutputExistsError, match="inside the input folder .*gt"):
        augment_dataset(source, os.path.join(source.root, "gt"), AugmentConfig(copies=1), workers=1, overwrite=True)
    assert len(SegmentationFolder(source.root)) == len(IDS)


def test_output_overlapping_the_backgrounds_is_refused(source, bg_path, tmp_path):
    config = AugmentConfig(background_prob=0.5)
    output = tmp_path / "out"
    augment_dataset(source, output, config, bg_path=bg_path, workers=1)
    inside = shutil.copytree(bg_path, output / "backgrounds")
    with pytest.raises(OutputExistsError, match="around the input folder .*backgrounds"):
        augment_dataset(source, output, config, bg_path=inside, workers=1, overwrite=True)
    assert sorted(os.listdir(inside)) == ["blue.jpg", "green.png"]
    with pytest.raises(OutputExistsError, match="inside the input folder"):
        augment_dataset(source, bg_path / "out", config, bg_path=bg_path, workers=1)


def test_background_path_errors_name_the_folder(source, bg_path, tmp_path):
    missing = tmp_path / "no_backgrounds"
    config = AugmentConfig(background_prob=0.5)
    with pytest.raises(DataError, match="no_backgrounds"):
        augment_dataset(source, tmp_path / "out", config, bg_path=missing)
    empty = tmp_path / "empty_backgrounds"
    empty.mkdir()
    with pytest.raises(DataError, match="empty_backgrounds.*no images"):
        augment_dataset(source, tmp_path / "out", config, bg_path=empty)
    with pytest.raises(ValueError, match="no bg_path"):
        augment_dataset(source, tmp_path / "out", config)
    with pytest.raises(ValueError, match="would be ignored"):
        augment_dataset(source, tmp_path / "out", AugmentConfig(), bg_path=bg_path)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the command line


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, os.path.join(REPO, "examples", "augment.py"), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_help_lists_every_option():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for field in dataclasses.fields(AugmentConfig):
        assert f"--{field.name}" in result.stdout
    for flag in ("--source", "--output", "--bg_path", "--workers", "--overwrite", "--images"):
        assert flag in result.stdout


def test_cli_writes_the_augmented_folder(source, bg_path, tmp_path):
    output = tmp_path / "cli_out"
    result = run_cli("--source", source.root, "--output", output, "--copies", 2, "--workers", 1,
                     "--rotation_prob", 1, "--rotation_degrees", 10, 20,
                     "--bg_path", bg_path, "--background_prob", 0.5)
    assert result.returncode == 0, result.stderr
    assert len(SegmentationFolder(output)) == 3 * len(IDS)

    refused = run_cli("--source", source.root, "--output", output)
    assert refused.returncode != 0 and "not empty" in refused.stderr
