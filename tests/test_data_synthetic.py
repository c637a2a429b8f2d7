"""segzoo.data.synthetic: the sample CVAT export, backgrounds and video."""

import hashlib
import os
import zipfile

import cv2
import numpy as np
import pytest

from segzoo.data import DataError, make_cvat_sample, read_cvat, read_image
from segzoo.data.overlay import voc_palette

SMALL = dict(num_images=5, image_size=(64, 96), num_backgrounds=2, video_frames=6)


def _files_hash(path):
    digest = hashlib.sha256()
    for dirpath, _, filenames in sorted(os.walk(path)):
        for filename in sorted(filenames):
            full = os.path.join(dirpath, filename)
            digest.update(os.path.relpath(full, path).encode())
            with open(full, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def test_sample_is_a_cvat_export_with_backgrounds_and_a_video(tmp_path):
    sample = make_cvat_sample(tmp_path, **SMALL)
    export = sample.export
    assert open(os.path.join(export, "labelmap.txt")).read().splitlines() == [
        "# label:color_rgb:parts:actions", "background:0,0,0::", "crack:51,221,255::", "hole:250,50,83::"]
    dataset = read_cvat(export)
    assert dataset.class_names == ["background", "crack", "hole"]
    assert dataset.ids == list(sample.ids) and len(dataset) == 5
    assert dataset.subsets() == {"default": list(sample.ids)}
    assert len(sample.unlabelled_ids) == 1 and dataset.unlabelled_ids == list(sample.unlabelled_ids)
    # CVAT writes no mask for an image without annotation, and still lists it.
    assert not os.path.exists(os.path.join(export, "SegmentationClass", sample.unlabelled_ids[0] + ".png"))
    seen = set()
    for item_id, image, label in dataset.items():
        assert image.shape == (64, 96, 3) and label.shape == (64, 96)
        assert (label > 0).any() == (item_id not in sample.unlabelled_ids)
        seen |= set(np.unique(label).tolist())
        if (label > 0).any():  # defects are dark: a model can learn them
            assert image[label > 0].mean() < 0.7 * image[label == 0].mean()
            instances = read_image(os.path.join(export, "SegmentationObject", item_id + ".png"))
            used = {tuple(c) for c in np.unique(instances.reshape(-1, 3), axis=0)}
            assert used <= {tuple(c) for c in voc_palette(8)} and ((instances > 0).any(-1) == (label > 0)).all()
    assert seen == {0, 1, 2}
    backgrounds = sorted(os.listdir(sample.backgrounds))
    assert backgrounds == ["bg_000.jpg", "bg_001.jpg"]
    assert read_image(os.path.join(sample.backgrounds, backgrounds[0])).shape == (64, 96, 3)
    capture = cv2.VideoCapture(sample.video)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 6 and frames[0].shape == (64, 96, 3)


def test_sample_is_deterministic_per_seed(tmp_path):
    exports = [make_cvat_sample(tmp_path / name, seed=seed, **SMALL).export
               for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    assert _files_hash(exports[0]) == _files_hash(exports[1])
    assert _files_hash(exports[0]) != _files_hash(exports[2])


def test_zip_without_images_needs_the_images_folder(tmp_path):
    sample = make_cvat_sample(tmp_path, zip=True, save_images=False, video_frames=0,
                              **{k: v for k, v in SMALL.items() if k != "video_frames"})
    assert sample.export.endswith(".zip") and sample.video is None
    with zipfile.ZipFile(sample.export) as archive:
        names = archive.namelist()
    assert "labelmap.txt" in names and not any(n.endswith("/") or n.startswith("JPEGImages") for n in names)
    with pytest.raises(DataError, match="images="):
        read_cvat(sample.export)
    dataset = read_cvat(sample.export, images=sample.images)
    assert len(dataset) == 5 and dataset.num_unlabelled == 1


def test_existing_outputs_are_not_overwritten(tmp_path):
    make_cvat_sample(tmp_path, **SMALL)
    with pytest.raises(DataError, match="already exist"):
        make_cvat_sample(tmp_path, **SMALL)
    make_cvat_sample(tmp_path, seed=1, overwrite=True, **SMALL)


def test_voc_palette():
    np.testing.assert_array_equal(voc_palette(5), [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]])
