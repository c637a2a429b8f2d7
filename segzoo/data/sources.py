"""Open a labelled dataset from a path, whatever its format; draw sample images from it.

:func:`open_dataset` is the one place that tells the formats apart:

- an ``rgb/`` + ``gt/`` folder (it holds ``classes.json``);
- a zip archive of one (``classes.json`` at the root or under one top folder);
- a CVAT "Segmentation mask 1.1" export, as a folder or a zip (it holds
  ``labelmap.txt``, at the root or under one top folder);
- a folder holding exactly one zip of either (a TFDS manual directory, such
  as the original project's folder with ``full_semantic.zip``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import cv2
import numpy as np

from segzoo.data.cvat import LABELMAP_FILE, CvatDataset, import_cvat
from segzoo.data.folder import CLASSES_FILE, SegmentationFolder, SegmentationZip
from segzoo.data.io import DataError, FolderFiles, ZipFiles, find_root, open_files
from segzoo.errors import option
from segzoo.files import atomic_write, write_json

#: What an import folder records about the export it came from (see :func:`prepare_source`).
IMPORT_RECORD = "source.json"

logger = logging.getLogger(__name__)

_RGB_GT, _CVAT = "an rgb/ + gt/ dataset", "a CVAT export"


def _find_dataset(path) -> tuple[str, str]:
    """What ``path`` holds: ``(_RGB_GT or _CVAT, the folder or zip to open)``."""
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or folder.")
    if not os.path.isdir(path):
        return _kind_of_zip(path), path
    if os.path.isfile(os.path.join(path, CLASSES_FILE)):
        return _RGB_GT, path
    if find_root(FolderFiles(path).names(), LABELMAP_FILE) is not None:
        return _CVAT, path
    archives = sorted(name for name in os.listdir(path)
                      if name.lower().endswith(".zip") and os.path.isfile(os.path.join(path, name)))
    if len(archives) == 1:
        archive = os.path.join(path, archives[0])
        return _kind_of_zip(archive), archive
    found = f"{len(archives)} zip archives ({', '.join(archives)})" if archives else "no zip archive"
    raise DataError(
        f"{path}: not a dataset. Expected an rgb/ + gt/ folder with {CLASSES_FILE}, a CVAT export "
        f"with {LABELMAP_FILE}, or exactly one zip archive of either; found neither file and {found}."
    )


def _kind_of_zip(path) -> str:
    with ZipFiles(path) as files:
        names = files.names()
    for kind, marker in ((_RGB_GT, CLASSES_FILE), (_CVAT, LABELMAP_FILE)):
        if find_root(names, marker) is not None:
            return kind
    raise DataError(
        f"{path}: neither an rgb/ + gt/ dataset ({CLASSES_FILE}) nor a CVAT export ({LABELMAP_FILE}) "
        f"at the root of the archive or under a single top folder."
    )


def _refuse_cvat_options(path, images, binary):
    if images is not None:
        raise DataError(f"{path} is an rgb/ + gt/ dataset, which holds its own images: "
                        f"{option('images')} {os.fspath(images)!r} applies to CVAT exports only. Drop it.")
    if binary:
        raise DataError(f"{path} is an rgb/ + gt/ dataset: binary=True (merging every foreground "
                        f"class into one) applies to CVAT exports only. Drop it.")


def open_dataset(path, images=None, binary=False, *, cvat=True, label_values=None):
    """Open a labelled dataset given in any of the forms of the module docstring.

    The result follows the protocol of
    :class:`segzoo.data.folder.SegmentationDataset` (``class_names``,
    ``colors``, ``ignore_index``, ``ids``, ``load``, ``items``, ``subsets``,
    ``image_path``): a :class:`~segzoo.data.folder.SegmentationFolder`, a
    :class:`~segzoo.data.folder.SegmentationZip` or a
    :class:`~segzoo.data.cvat.CvatDataset`. Close it when done (or use
    ``with``): a zip stays open.

    Args:
        path: the folder or zip.
        images: for a CVAT export saved without images, the folder of the
            original images; refused for an ``rgb/`` + ``gt/`` dataset, which
            holds its own.
        binary: for a CVAT export, merge every foreground label into class 1;
            refused for an ``rgb/`` + ``gt/`` dataset.
        cvat: accept a CVAT export. Readers that need stored class ids (the
            TFDS builder, :func:`segzoo.data.load`) pass ``False``, which turns a
            CVAT export into an error naming the fix.
        label_values: for an ``rgb/`` + ``gt/`` dataset, the stored label value
            of each class in order (``(0, 255)``: masks stored as 0/255 become
            class ids 0/1); ``None`` reads stored values as class ids.

    Raises:
        DataError: a missing path, a path that is no dataset (naming what was
            found), an option that does not apply to the dataset found, or a
            CVAT export when ``cvat`` is false.
    """
    path = os.fspath(path)
    kind, found = _find_dataset(path)
    if kind == _CVAT:
        if not cvat:
            raise DataError(
                f"{found} is a CVAT export; this reader needs an rgb/ + gt/ dataset of class ids. "
                f"Convert it first with segzoo.data.import_cvat (or segzoo.data.prepare_source)."
            )
        if label_values is not None:
            raise DataError(f"{found} is a CVAT export, whose masks are colours: {option('label_values')} "
                            f"applies to rgb/ + gt/ datasets only. Drop it.")
        return CvatDataset(found, images=images, binary=binary)
    _refuse_cvat_options(path, images, binary)
    reader = SegmentationFolder if os.path.isdir(found) else SegmentationZip
    return reader(found, label_values=label_values)


def data_fingerprint(path, images=None) -> dict:
    """What identifies a dataset on disk: its path, number of files, bytes and a digest of names and sizes.

    ``path`` is a folder or zip (any form :func:`open_dataset` accepts) or a
    TFDS name (then only the name is recorded); ``images`` the folder of a CVAT
    export's original images. Contents are not hashed (a file rewritten with
    the same size goes unnoticed); names and sizes are, which is quick.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return {"source": path}
    record = {"source": os.path.abspath(path)}
    for key, root in (("files", path), ("images", images)):
        if root is None:
            continue
        digest, count, total = hashlib.sha256(), 0, 0
        with open_files(root) as files:
            for name in files.names():
                if name.endswith("/" + IMPORT_RECORD) or name == IMPORT_RECORD:
                    continue
                size = files.size(name)
                digest.update(f"{name}\0{size}\n".encode("utf-8"))
                count, total = count + 1, total + size
        record[key] = {"count": count, "bytes": total, "sha256": digest.hexdigest()}
    if images is not None:
        record["images_folder"] = os.path.abspath(os.fspath(images))
    return record


def _read_record(folder):
    try:
        with open(os.path.join(folder, IMPORT_RECORD), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def prepare_source(data, images=None, binary=False, import_dir=None):
    """Resolve a ``--data`` argument to what :func:`segzoo.data.load` reads.

    An ``rgb/`` + ``gt/`` dataset in any form :func:`open_dataset` accepts
    (folder, zip, folder holding one zip), or a name that is no path (a built
    TFDS dataset), is returned as it is. A CVAT export (folder or zip, or a
    folder holding one zip of it) is imported with
    :func:`segzoo.data.cvat.import_cvat` into ``import_dir`` once; an
    ``import_dir`` that already holds an import of it is reused.

    Returns:
        The path or the TFDS name that :func:`segzoo.data.load` reads.

    Raises:
        DataError: as :func:`open_dataset` does for a path that is no dataset,
            or ``images`` / ``binary`` given for an ``rgb/`` + ``gt/`` dataset.
        ValueError: a CVAT export without ``import_dir``.
    """
    path = os.fspath(data)
    if not os.path.exists(path):
        return path
    kind, found = _find_dataset(path)
    if kind == _RGB_GT:
        _refuse_cvat_options(path, images, binary)
        return path
    if import_dir is None:
        raise ValueError(f"{path} is a CVAT export: give import_dir, the folder to import it into.")
    import_dir = os.path.abspath(os.fspath(import_dir))
    record = {"export": data_fingerprint(found, images), "binary": bool(binary)}
    if os.path.isdir(import_dir) and os.listdir(import_dir) and not os.path.isfile(
            os.path.join(import_dir, CLASSES_FILE)):
        raise DataError(f"{import_dir}: not empty and not an import of a CVAT export (no {CLASSES_FILE}); "
                        f"refusing to replace it. Empty it, or choose another folder.")
    if os.path.isfile(os.path.join(import_dir, CLASSES_FILE)):
        if _read_record(import_dir) == record:
            logger.info("Using the CVAT import of %s already in %s", found, import_dir)
            return import_dir
        logger.warning("%s holds an import of another or an edited export (or other options): importing %s "
                       "anew.", import_dir, found)
    else:
        logger.info("Importing the CVAT export %s into %s", found, import_dir)
    with atomic_write(import_dir, folder=True) as staging:
        import_cvat(found, staging, images=images, binary=binary, name=import_dir)
        write_json(os.path.join(staging, IMPORT_RECORD), record)
    return import_dir


def draw_images(dataset, count, seed=0, subset=None):
    """``count`` RGB images of ``dataset`` (seeded draw), each at its own size: a list of ``uint8 (h, w, 3)``.

    ``subset`` restricts the draw to one subset (e.g. ``"train"``) when the
    dataset has subset lists.
    """
    ids = list(dataset.subsets().get(subset, dataset.ids)) if subset else list(dataset.ids)
    chosen = np.random.default_rng(seed).permutation(len(ids))[:count]
    return [dataset.load(ids[i])[0] for i in sorted(chosen)]


def resize_images(images, size):
    """RGB ``images`` (a sequence of ``(h, w, 3)`` arrays of any sizes) resized to ``size`` ``(H, W)`` by
    area interpolation: float32 ``(N, H, W, 3)``."""
    height, width = size
    return np.stack([cv2.resize(np.asarray(image), (width, height), interpolation=cv2.INTER_AREA)
                     for image in images]).astype(np.float32)


def sample_images(dataset, count, size, seed=0, subset=None):
    """``count`` images of ``dataset`` (:func:`draw_images`), resized to ``size`` ``(H, W)``: float32 ``(N, H, W, 3)``.

    For int8 calibration and export checks: real images, not random noise.
    """
    return resize_images(draw_images(dataset, count, seed, subset), size)
