"""Reading files safely, and images and label masks, with errors that name the file.

Images are RGB ``uint8`` arrays of shape ``(H, W, 3)``; labels are class-id
``uint8`` arrays of shape ``(H, W)``. Every reader raises :class:`DataError`
naming the file and the problem instead of returning ``None`` (OpenCV's habit).

:class:`FolderFiles` and :class:`ZipFiles` give the files of a folder and the
members of a zip archive one interface (names, ``read``, ``describe``), so that
every dataset reader works on both; zip members are checked once and read in
memory, never extracted.
"""

from __future__ import annotations

import os
import stat
import struct
import zipfile

import cv2
import numpy as np

from segzoo.errors import SegzooError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _env_limit(name: str, default: int) -> int:
    value = os.environ.get(f"SEGZOO_{name}")
    return int(value) if value else default


# Bounds on untrusted input. Each is read when used: raise one for a run with the
# environment variable SEGZOO_<NAME> (e.g. SEGZOO_MAX_IMAGE_PIXELS=400000000), or in
# Python by assigning segzoo.data.io.<NAME>.
#: Pixels of one image or mask, read from its header before it is decoded (default 100 megapixels).
MAX_IMAGE_PIXELS = _env_limit("MAX_IMAGE_PIXELS", 100_000_000)
#: Inflated bytes of one zip member (default 1 GiB).
MAX_ZIP_MEMBER_BYTES = _env_limit("MAX_ZIP_MEMBER_BYTES", 1 << 30)
#: Inflated bytes of all members of one zip archive together (default 64 GiB).
MAX_ZIP_TOTAL_BYTES = _env_limit("MAX_ZIP_TOTAL_BYTES", 64 << 30)
#: Bytes of one text file: labelmap.txt, classes.json, a subset list (default 64 MiB).
MAX_TEXT_BYTES = _env_limit("MAX_TEXT_BYTES", 64 << 20)


def limit_hint(name: str) -> str:
    """How a message says to raise the limit ``name`` of this module."""
    return (f"If you trust this file, raise the limit with the environment variable SEGZOO_{name} "
            f"(or segzoo.data.io.{name} in Python).")


class DataError(SegzooError, ValueError):
    """Bad input data: the message names the file, the value and the fix."""


def read_bytes(path) -> bytes:
    """Read a whole file, raising :class:`DataError` naming it when it is missing."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file.")
    with open(path, "rb") as f:
        return f.read()


def decode_text(data: bytes, source: str) -> str:
    """Decode UTF-8 text read from ``source``, a leading byte-order mark (BOM) dropped.

    Raises :class:`DataError` naming ``source`` for bytes that are not UTF-8.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{source}: not UTF-8 text ({error}). Save it as UTF-8.") from error


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
    total = 0
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        problem = None
        total += info.file_size
        if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            problem = "has an absolute path"
        elif ".." in name.split("/"):
            problem = "climbs out of the archive with '..'"
        elif stat.S_ISLNK(info.external_attr >> 16):
            problem = "is a symbolic link"
        if problem:
            archive.close()
            raise DataError(
                f"{path}!{info.filename}: unsafe zip member: it {problem}; refusing the archive. "
                f"Re-create it with relative paths and plain files only."
            )
    if total > MAX_ZIP_TOTAL_BYTES:
        archive.close()
        raise DataError(f"{path}: its members inflate to {total} bytes, more than MAX_ZIP_TOTAL_BYTES "
                        f"({MAX_ZIP_TOTAL_BYTES}); refusing the archive. {limit_hint('MAX_ZIP_TOTAL_BYTES')}")
    return archive


class _Files:
    """What :class:`FolderFiles` and :class:`ZipFiles` share; ``root`` is the folder or the archive.

    A file is named by its ``/``-separated path relative to ``root``.
    """

    root: str

    def read(self, name: str) -> bytes:
        """The bytes of the file ``name``; :class:`DataError` naming it when it cannot be read."""
        raise NotImplementedError

    def describe(self, name: str) -> str:
        """How messages name the file ``name``: a path, or ``"<archive>!<member>"``."""
        raise NotImplementedError

    def size(self, name: str) -> int:
        """Bytes of the file ``name`` (inflated, for a zip member)."""
        raise NotImplementedError

    def read_text(self, name: str) -> str:
        """The file ``name`` as UTF-8 text (a BOM dropped), at most :data:`MAX_TEXT_BYTES`."""
        size = self.size(name)
        if size > MAX_TEXT_BYTES:
            raise DataError(f"{self.describe(name)}: {size} bytes, more than a text file of a dataset may have "
                            f"(MAX_TEXT_BYTES = {MAX_TEXT_BYTES}). {limit_hint('MAX_TEXT_BYTES')}")
        return decode_text(self.read(name), self.describe(name))

    def close(self) -> None:
        """Release open files (nothing for a folder)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _subfolder(folder: str) -> str:
    """``folder`` as a name prefix: ``""`` or ``"a/b/"``."""
    folder = folder.strip("/")
    return folder + "/" if folder else ""


class FolderFiles(_Files):
    """The files below the folder ``root``."""

    def __init__(self, root):
        self.root = os.fspath(root)

    def names(self, folder: str = "") -> list[str]:
        """Sorted ``/``-separated paths, relative to ``folder`` (below ``root``), of the files below it."""
        top = self.describe(_subfolder(folder))
        return sorted(
            os.path.relpath(os.path.join(dirpath, filename), top).replace(os.sep, "/")
            for dirpath, _, filenames in os.walk(top) for filename in filenames
        )

    def exists(self, name: str) -> bool:
        """Whether the file ``name`` exists."""
        return os.path.isfile(self.describe(name))

    def read(self, name: str) -> bytes:
        return read_bytes(self.describe(name))

    def size(self, name: str) -> int:
        path = self.describe(name)
        if not os.path.isfile(path):
            raise DataError(f"{path}: no such file.")
        return os.path.getsize(path)

    def describe(self, name: str) -> str:
        return os.path.join(self.root, *name.split("/"))


class ZipFiles(_Files):
    """The file members of the zip archive ``root``, read in memory.

    Member names are checked once by :func:`open_zip`; folder entries and
    macOS's ``__MACOSX/`` resource forks are not files of the dataset. The
    archive opens lazily, once per process: a pickled copy (sent to a process
    pool) holds the path and the names only, and a forked child opens its own
    handle. :meth:`close` (or ``with``) closes it; it reopens if read again.
    """

    def __init__(self, path):
        self.root = os.fspath(path)
        self._archive = self._pid = None
        self._names = sorted(name for name in self._open().namelist()
                             if not name.endswith("/") and not name.startswith("__MACOSX/"))
        self._members = set(self._names)

    def _open(self) -> zipfile.ZipFile:
        if self._archive is None or self._pid != os.getpid():
            self._archive, self._pid = open_zip(self.root), os.getpid()
        return self._archive

    def __getstate__(self):
        return {**self.__dict__, "_archive": None, "_pid": None}

    def names(self, folder: str = "") -> list[str]:
        """Sorted member names below ``folder``, relative to it."""
        start = _subfolder(folder)
        return [name[len(start):] for name in self._names if name.startswith(start)]

    def exists(self, name: str) -> bool:
        """Whether the archive holds the file ``name``."""
        return name in self._members

    def size(self, name: str) -> int:
        try:
            return self._open().getinfo(name).file_size
        except KeyError:
            raise DataError(f"{self.describe(name)}: cannot read this zip member (no such member in the "
                            f"archive).") from None

    def read(self, name: str) -> bytes:
        size = self.size(name)
        if size > MAX_ZIP_MEMBER_BYTES:
            raise DataError(f"{self.describe(name)}: inflates to {size} bytes, more than MAX_ZIP_MEMBER_BYTES "
                            f"({MAX_ZIP_MEMBER_BYTES}). {limit_hint('MAX_ZIP_MEMBER_BYTES')}")
        try:
            return self._open().read(name)
        except (zipfile.BadZipFile, OSError, KeyError) as error:
            raise DataError(f"{self.describe(name)}: cannot read this zip member ({error}).") from error

    def describe(self, name: str) -> str:
        return f"{self.root}!{name}"

    def close(self) -> None:
        """Close the archive (it reopens if read again)."""
        if self._archive is not None:
            self._archive.close()
            self._archive = None


def open_files(path) -> FolderFiles | ZipFiles:
    """The files of the folder, or the members of the zip archive, ``path``."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return FolderFiles(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or folder.")
    return ZipFiles(path)


def find_root(names, marker: str) -> str | None:
    """Where the file ``marker`` (``"classes.json"``) puts a dataset among the file ``names``.

    ``""`` when ``marker`` is at the root; ``"<top>/"`` when exactly one
    top-level folder holds it (an archive zipped with its folder); otherwise
    ``None``.
    """
    if marker in names:
        return ""
    wrapped = [name for name in names if name.count("/") == 1 and name.endswith("/" + marker)]
    return wrapped[0][: -len(marker)] if len(wrapped) == 1 else None


def _tiff_entries(data: bytes, start: int):
    """``{tag: first value}`` of the first IFD of the TIFF structure at ``data[start:]`` (EXIF is one)."""
    order = {b"II": "<", b"MM": ">"}.get(data[start:start + 2])
    if order is None or len(data) < start + 8:
        return {}
    (offset,) = struct.unpack(order + "I", data[start + 4:start + 8])
    position = start + offset
    if len(data) < position + 2:
        return {}
    (count,) = struct.unpack(order + "H", data[position:position + 2])
    entries = {}
    for index in range(min(count, 512)):
        entry = data[position + 2 + 12 * index: position + 14 + 12 * index]
        if len(entry) < 12:
            break
        tag, kind, _ = struct.unpack(order + "HHI", entry[:8])
        if kind == 3:  # SHORT
            entries[tag] = struct.unpack(order + "H", entry[8:10])[0]
        elif kind == 4:  # LONG
            entries[tag] = struct.unpack(order + "I", entry[8:12])[0]
    return entries


def _jpeg_header(data: bytes):
    """``(width, height, EXIF orientation)`` from the markers of a JPEG, before its image data."""
    position, size, orientation = 2, None, 1
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            position += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[position + 2:position + 4])
        segment = data[position + 4:position + 2 + length]
        if marker == 0xE1 and segment.startswith(b"Exif\0\0"):
            orientation = _tiff_entries(segment, 6).get(0x0112, 1)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and len(segment) >= 5:
            height, width = struct.unpack(">HH", segment[1:5])
            size = (width, height)
            break
        if marker == 0xDA:
            break
        position += 2 + length
    return (*size, orientation) if size else None


def image_header(data: bytes):
    """``(width, height, EXIF orientation 1..8)`` read from an encoded image's header, or ``None``.

    PNG (with an ``eXIf`` chunk), JPEG (EXIF in APP1), BMP, WebP and TIFF; nothing is decoded.
    """
    data = bytes(data[:1 << 20]) if len(data) > 1 << 20 else bytes(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        orientation, position = 1, 8
        while position + 8 <= len(data):
            (length,), kind = struct.unpack(">I", data[position:position + 4]), data[position + 4:position + 8]
            if kind == b"eXIf":
                orientation = _tiff_entries(data[position + 8:position + 8 + length], 0).get(0x0112, 1)
            if kind in (b"IDAT", b"IEND"):
                break
            position += 12 + length
        return width, height, orientation
    if data.startswith(b"\xff\xd8"):
        return _jpeg_header(data)
    if data.startswith(b"BM") and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height), 1
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP" and len(data) >= 30:
        kind = data[12:16]
        if kind == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little"), 1
        if kind == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF), 1
        if kind == b"VP8 ":
            width, height = struct.unpack("<HH", data[26:30])
            return width & 0x3FFF, height & 0x3FFF, 1
    if data[:4] in (b"II*\0", b"MM\0*"):
        entries = _tiff_entries(data, 0)
        if 256 in entries and 257 in entries:
            return entries[256], entries[257], entries.get(0x0112, 1)
    return None


#: EXIF orientations that swap width and height (a quarter turn).
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1 = as stored .. 8) of an encoded image; 1 when it has none."""
    header = image_header(data)
    return header[2] if header else 1


def _decode_bytes(data, flags, source):
    header = image_header(data) if len(data) else None
    if header is not None and header[0] * header[1] > MAX_IMAGE_PIXELS:
        raise DataError(f"{source}: its header says {header[0]}x{header[1]} pixels, more than MAX_IMAGE_PIXELS "
                        f"({MAX_IMAGE_PIXELS}); not decoded. {limit_hint('MAX_IMAGE_PIXELS')}")
    data = np.frombuffer(data, dtype=np.uint8)
    try:
        array = cv2.imdecode(data, flags) if data.size else None
    except cv2.error as error:
        reason = str(error).strip().splitlines()[-1]
        raise DataError(f"{source}: OpenCV cannot decode this image ({reason}). Re-export or remove it.") from None
    if array is None:
        raise DataError(
            f"{source}: cannot decode this file as an image (corrupt, truncated "
            f"or not an image). Re-export or remove it."
        )
    return array


def read_image(path) -> np.ndarray:
    """Read an image file as RGB ``uint8`` of shape ``(H, W, 3)``.

    Grayscale and RGBA files are converted to RGB (alpha is dropped). EXIF
    orientation is applied, as CVAT does when it shows the image (so masks drawn
    in CVAT fit it); labels and masks are never turned: they must be drawn on
    the turned image (see :func:`segzoo.data.folder.check_same_size`).
    """
    return decode_image(read_bytes(path), os.fspath(path))


def read_color_mask(path) -> np.ndarray:
    """Read a colour mask (CVAT ``SegmentationClass`` PNG) as RGB ``uint8`` ``(H, W, 3)``.

    Unlike :func:`read_image`, EXIF orientation is ignored: masks are written
    in the orientation of the annotated image.
    """
    return decode_color_mask(read_bytes(path), os.fspath(path))


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
    return decode_label(read_bytes(path), os.fspath(path))


def decode_label(data: bytes, source: str) -> np.ndarray:
    """Like :func:`read_label`, for an encoded label held in memory; ``source`` names it."""
    return _check_label(_decode_bytes(data, cv2.IMREAD_UNCHANGED, source), source)


def decode_mask(data: bytes, source: str) -> np.ndarray:
    """Decode a mask as stored, never turned: ``(H, W)`` or, for a colour mask, ``(H, W, 3)`` RGB.

    The values are kept (``uint8`` or ``uint16``); alpha is dropped. A palette
    (indexed) PNG decodes to its colours. ``source`` names the data in errors.
    """
    array = _decode_bytes(data, cv2.IMREAD_UNCHANGED, source)
    if array.ndim == 3 and array.shape[2] == 1:
        return array[..., 0]
    if array.ndim == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB if array.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return array


def _check_label(array, source):
    if array.dtype != np.uint8 or array.ndim != 2:
        raise DataError(
            f"{source}: a label must hold uint8 class ids of shape (H, W) (a single-channel 8-bit "
            f"PNG on disk), got dtype {array.dtype} with shape {array.shape}. Colour masks "
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
    label = _check_label(np.asarray(label), os.fspath(path))
    if not os.fspath(path).lower().endswith(".png"):
        raise DataError(f"{path}: labels are stored as PNG; a lossy format would invent class ids.")
    _encode_png(path, label)
