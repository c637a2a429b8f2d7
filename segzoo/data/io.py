"""Reading and writing images and label masks, with errors that name the file.

Images are RGB ``uint8`` arrays of shape ``(H, W, 3)``; labels are class-id
``uint8`` arrays of shape ``(H, W)``. Every reader raises :class:`DataError`
naming the file and the problem instead of returning ``None`` (OpenCV's habit).
"""

from __future__ import annotations

import os
import stat
import zipfile

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """Bad input data: the message names the file, the value and the fix."""


def read_bytes(path) -> bytes:
    """Read a whole file, raising :class:`DataError` naming it when it is missing."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file.")
    with open(path, "rb") as f:
        return f.read()


def open_zip(path) -> zipfile.ZipFile:
    """Open a zip archive whose members will be read in memory, after checking every name.

    Raises:
        DataError: naming the archive and the member when a member has an
            absolute path, climbs out with ``..`` or is a symbolic link (such an
            archive could write outside any folder it is extracted to), or when
            the file is not a zip archive.
    """
    path = os.fspath(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: cannot open as a zip archive ({error}).") from error
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        problem = None
        if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            problem = "has an absolute path"
        elif ".." in name.split("/"):
            problem = "climbs out of the archive with '..'"
        elif stat.S_ISLNK(info.external_attr >> 16):
            problem = "is a symbolic link"
        if problem:
            archive.close()
            raise DataError(
                f"{path}!{info.filename}: this zip member {problem}; refusing the archive. "
                f"Re-create it with relative paths and plain files only."
            )
    return archive


def _decode(path, flags):
    # np.fromfile + imdecode instead of imread: imread prints nothing useful and
    # returns None for a missing file, a directory or a truncated image alike.
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file.")
    return _decode_bytes(np.fromfile(path, dtype=np.uint8), flags, path)


def _decode_bytes(data, flags, source):
    data = np.frombuffer(data, dtype=np.uint8)
    array = cv2.imdecode(data, flags) if data.size else None
    if array is None:
        raise DataError(
            f"{source}: cannot decode this file as an image (corrupt, truncated "
            f"or not an image). Re-export or remove it."
        )
    return array


def read_image(path) -> np.ndarray:
    """Read an image file as RGB ``uint8`` of shape ``(H, W, 3)``.

    Grayscale and RGBA files are converted to RGB (alpha is dropped); EXIF
    orientation is applied, as CVAT does when it shows the image.
    """
    array = _decode(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def read_color_mask(path) -> np.ndarray:
    """Read a colour mask (CVAT ``SegmentationClass`` PNG) as RGB ``uint8`` ``(H, W, 3)``.

    Unlike :func:`read_image`, EXIF orientation is ignored: masks are written
    in the orientation of the annotated image.
    """
    array = _decode(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def decode_image(data: bytes, source: str) -> np.ndarray:
    """Like :func:`read_image`, for an encoded image held in memory (a zip member).

    ``source`` names the data in error messages (``"export.zip!JPEGImages/a.jpg"``).
    """
    return cv2.cvtColor(_decode_bytes(data, cv2.IMREAD_COLOR, source), cv2.COLOR_BGR2RGB)


def decode_color_mask(data: bytes, source: str) -> np.ndarray:
    """Like :func:`read_color_mask`, for an encoded mask held in memory (a zip member)."""
    array = _decode_bytes(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION, source)
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def read_label(path) -> np.ndarray:
    """Read a class-id mask: a single-channel 8-bit PNG, as ``uint8`` ``(H, W)``."""
    return _check_label(_decode(path, cv2.IMREAD_UNCHANGED), os.fspath(path))


def decode_label(data: bytes, source: str) -> np.ndarray:
    """Like :func:`read_label`, for an encoded label held in memory; ``source`` names it."""
    return _check_label(_decode_bytes(data, cv2.IMREAD_UNCHANGED, source), source)


def _check_label(array, source):
    if array.dtype != np.uint8 or array.ndim != 2:
        raise DataError(
            f"{source}: a label must be a single-channel 8-bit PNG of class ids, "
            f"got dtype {array.dtype} with shape {array.shape}. Colour masks "
            f"are converted to ids by segzoo.data.read_cvat."
        )
    return array


def _encode_png(path, array):
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    ok, buffer = cv2.imencode(os.path.splitext(path)[1] or ".png", array)
    if not ok:
        raise DataError(f"{path}: OpenCV could not encode an array of shape {array.shape}.")
    buffer.tofile(path)


def write_image(path, image: np.ndarray) -> None:
    """Write an RGB ``uint8`` ``(H, W, 3)`` image; the format follows the extension."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise DataError(
            f"{path}: expected an RGB uint8 image of shape (H, W, 3), got "
            f"dtype {image.dtype} with shape {image.shape}."
        )
    _encode_png(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def write_label(path, label: np.ndarray) -> None:
    """Write a class-id ``uint8`` ``(H, W)`` mask as a lossless single-channel PNG."""
    label = np.asarray(label)
    if label.dtype != np.uint8 or label.ndim != 2:
        raise DataError(
            f"{path}: expected a uint8 label of shape (H, W), got dtype "
            f"{label.dtype} with shape {label.shape}."
        )
    if not os.fspath(path).lower().endswith(".png"):
        raise DataError(f"{path}: labels are stored as PNG; a lossy format would invent class ids.")
    _encode_png(path, label)
