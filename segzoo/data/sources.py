"""Open a labelled dataset from a path, whatever its format; draw sample images from it."""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np

from segzoo.data.cvat import import_cvat, read_cvat
from segzoo.data.folder import CLASSES_FILE, SegmentationFolder
from segzoo.data.io import DataError

logger = logging.getLogger(__name__)


def open_dataset(path, images=None):
    """Open an ``rgb/`` + ``gt/`` folder or a CVAT "Segmentation mask 1.1" export.

    Both results follow the dataset protocol of
    :class:`segzoo.data.folder.SegmentationFolder` (``class_names``, ``colors``,
    ``ignore_index``, ``ids``, ``load``, ``items``, ``subsets``, ``image_path``).

    Args:
        path: a folder holding ``classes.json`` (an ``rgb/`` + ``gt/`` folder),
            or a CVAT export, as a folder or a zip.
        images: for a CVAT export saved without images, the folder of the
            original images; refused for an ``rgb/`` + ``gt/`` folder, which
            holds its own.

    Raises:
        DataError: a missing path, ``images`` given for an ``rgb/`` + ``gt/``
            folder, or a path that is neither kind of dataset.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or folder.")
    if os.path.isfile(os.path.join(path, CLASSES_FILE)):
        if images is not None:
            raise DataError(f"{path} is an rgb/ + gt/ folder, which holds its own images: "
                            f"images={os.fspath(images)!r} applies to CVAT exports only. Drop it.")
        return SegmentationFolder(path)
    return read_cvat(path, images=images)


def prepare_source(data, images=None, binary=False, import_dir=None):
    """Resolve a ``--data`` argument to what :func:`segzoo.data.load` reads.

    An ``rgb/`` + ``gt/`` folder, or a name that is no path (a built TFDS
    dataset), is returned as it is. A CVAT export (folder or zip) is imported
    with :func:`segzoo.data.cvat.import_cvat` into ``import_dir`` once; an
    ``import_dir`` that already holds an import of it is reused.

    Returns:
        The folder path or the TFDS name.
    """
    path = os.fspath(data)
    if not os.path.exists(path):
        return path
    if os.path.isfile(os.path.join(path, CLASSES_FILE)):
        return path
    if import_dir is None:
        raise ValueError(f"{path} is a CVAT export: give import_dir, the folder to import it into.")
    if os.path.isfile(os.path.join(import_dir, CLASSES_FILE)):
        logger.info("Using the CVAT import already in %s", import_dir)
        return import_dir
    logger.info("Importing the CVAT export %s into %s", path, import_dir)
    return import_cvat(path, import_dir, images=images, binary=binary)


def sample_images(dataset, count, size, seed=0, subset=None):
    """``count`` images of ``dataset`` (seeded draw), resized to ``size`` ``(H, W)``: float32 ``(N, H, W, 3)``.

    For int8 calibration and export checks: real images, not random noise.
    ``subset`` restricts the draw to one subset (e.g. ``"train"``) when the
    dataset has subset lists.
    """
    ids = list(dataset.subsets().get(subset, dataset.ids)) if subset else list(dataset.ids)
    chosen = np.random.default_rng(seed).permutation(len(ids))[:count]
    height, width = size
    return np.stack([cv2.resize(dataset.load(ids[i])[0], (width, height), interpolation=cv2.INTER_AREA)
                     for i in sorted(chosen)]).astype(np.float32)
