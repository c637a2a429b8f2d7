"""Open a labelled dataset from a path, whatever its format."""

from __future__ import annotations

import os

from segzoo.data.cvat import read_cvat
from segzoo.data.folder import CLASSES_FILE, SegmentationFolder
from segzoo.data.io import DataError


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
