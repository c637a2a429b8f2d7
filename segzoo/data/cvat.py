"""CVAT "Segmentation mask 1.1" import: colour masks to class ids, read in place.

An export (a folder, or the ``.zip`` CVAT gives, read in memory and never
extracted) holds::

    labelmap.txt                          "name:R,G,B:parts:actions", sorted by name
    ImageSets/Segmentation/<subset>.txt   the ids of the images of each subset
    SegmentationClass/<id>.png            RGB colour masks, one colour per label
    SegmentationObject/<id>.png           instance colours (not read)
    JPEGImages/<id>.<ext>                 only when "Save images" was ticked

Class ids: CVAT's background label (the first label whose colour is 0,0,0;
failing that, the label named ``background``) is id 0; every other label
follows in ``labelmap.txt`` order. Which images are items:

- every id listed in a subset list: CVAT writes no mask for an image with no
  annotation, so a listed id without a mask is all background;
- every id with a mask, listed or not;
- an image listed nowhere and without a mask is left out, with a warning: CVAT
  lists no image whose only annotations are tags, points or polylines, so its
  pixels may hold objects that nobody drew as a mask (``unlisted_ids``).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import uuid
import zipfile

import numpy as np
from tqdm import tqdm

from segzoo.constants import BACKGROUND_ID, IGNORE_INDEX
from segzoo.data.folder import FolderWriter, index_by_id, validate_classes
from segzoo.data.io import (
    IMAGE_EXTENSIONS,
    DataError,
    decode_color_mask,
    decode_image,
    read_color_mask,
    read_image,
)

logger = logging.getLogger(__name__)

LABELMAP_FILE = "labelmap.txt"
SUBSETS_DIR = "ImageSets/Segmentation/"
MASKS_DIR = "SegmentationClass/"
IMAGES_DIR = "JPEGImages/"

#: Name of the single foreground class in ``binary=True`` mode when the export has several.
FOREGROUND_NAME = "foreground"


class _FolderFiles:
    """The files below a folder, named by ``/``-separated paths relative to it."""

    def __init__(self, root):
        self.root = os.fspath(root)

    def names(self) -> list[str]:
        return sorted(
            os.path.relpath(os.path.join(dirpath, filename), self.root).replace(os.sep, "/")
            for dirpath, _, filenames in os.walk(self.root) for filename in filenames
        )

    def describe(self, name: str) -> str:
        return os.path.join(self.root, *name.split("/"))

    def read_text(self, name: str) -> str:
        with open(self.describe(name), "rb") as f:
            return _decode_text(f.read(), self.describe(name))

    def read_image(self, name: str) -> np.ndarray:
        return read_image(self.describe(name))

    def read_color_mask(self, name: str) -> np.ndarray:
        return read_color_mask(self.describe(name))


class _ZipFiles:
    """The members of a zip file, read in memory.

    The archive opens lazily, once per process: a pickled copy (sent to a
    process pool) holds the path only, and a forked child opens its own handle.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._archive = None
        self._pid = None
        try:
            infos = self._open().infolist()
        except (zipfile.BadZipFile, OSError) as error:
            raise DataError(f"{self.path}: cannot read this zip file ({error}). Download the export again.") from error
        for info in infos:
            _check_member(info, self.path)
        self._names = sorted(info.filename for info in infos if not info.is_dir())

    def _open(self) -> zipfile.ZipFile:
        if self._archive is None or self._pid != os.getpid():
            self._archive, self._pid = zipfile.ZipFile(self.path), os.getpid()
        return self._archive

    def __getstate__(self):
        return {**self.__dict__, "_archive": None, "_pid": None}

    def names(self) -> list[str]:
        return list(self._names)

    def describe(self, name: str) -> str:
        return f"{self.path}!{name}"

    def _read(self, name: str) -> bytes:
        try:
            return self._open().read(name)
        except (zipfile.BadZipFile, OSError, KeyError) as error:
            raise DataError(f"{self.describe(name)}: cannot read this zip member ({error}).") from error

    def read_text(self, name: str) -> str:
        return _decode_text(self._read(name), self.describe(name))

    def read_image(self, name: str) -> np.ndarray:
        return decode_image(self._read(name), self.describe(name))

    def read_color_mask(self, name: str) -> np.ndarray:
        return decode_color_mask(self._read(name), self.describe(name))


def _decode_text(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{source}: not UTF-8 text ({error}). CVAT writes UTF-8; re-export it.") from error


def _check_member(info: zipfile.ZipInfo, archive: str) -> None:
    """Reject a zip member that could name a file outside the export."""
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise DataError(
            f"{archive}!{name}: unsafe zip member (an absolute path or a '..' component). "
            f"This is not an export CVAT wrote; refusing to read it."
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DataError(f"{archive}!{name}: the zip member is a symbolic link; refusing to read it.")


def _open_files(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        return _FolderFiles(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or folder. Pass a CVAT export folder or its .zip.")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: neither a folder nor a zip file. Pass a CVAT export folder or its .zip.")
    return _ZipFiles(path)


def _export_prefix(names, files) -> str:
    """Where the export starts: its root, or the one folder that wraps it (a re-zipped export)."""
    if LABELMAP_FILE in names:
        return ""
    wrapped = [n for n in names if n.count("/") == 1 and n.endswith("/" + LABELMAP_FILE)]
    if len(wrapped) == 1:
        return wrapped[0][: -len(LABELMAP_FILE)]
    raise DataError(
        f"{files.describe(LABELMAP_FILE)}: missing, so this is not a CVAT \"Segmentation mask 1.1\" "
        f"export (or it is empty). Export the task with that format."
    )


def parse_labelmap(text: str, source: str = LABELMAP_FILE) -> list[tuple[str, tuple[int, int, int]]]:
    """Parse a CVAT ``labelmap.txt``: ``[(name, (r, g, b)), ...]`` in file order.

    Lines are ``name:R,G,B:parts:actions``; empty lines and ``#`` comments are
    skipped; names may hold spaces (and colons). Duplicated names or colours
    raise :class:`DataError` naming ``source``.
    """
    labels = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.rsplit(":", 3)
        try:
            if len(fields) != 4:
                raise ValueError("expected name:R,G,B:parts:actions")
            color = tuple(int(value) for value in fields[1].split(","))
            if len(color) != 3:
                raise ValueError("the colour needs three values")
        except ValueError as error:
            raise DataError(f"{source}, line {number}: cannot parse {line!r} ({error}).") from error
        labels.append((fields[0].strip(), color))
    validate_classes([name for name, _ in labels], [color for _, color in labels], source)
    return labels


def _background_index(labels, source) -> int:
    """Index in ``labels`` of CVAT's background label (see the module docstring)."""
    for index, (_, color) in enumerate(labels):
        if color == (0, 0, 0):
            return index
    for index, (name, _) in enumerate(labels):
        if name == "background":
            return index
    raise DataError(
        f"{source}: no background label (none has the colour 0,0,0 and none is named "
        f"'background'), so unannotated pixels have no class. Add 'background:0,0,0::'."
    )


class CvatDataset:
    """A CVAT "Segmentation mask 1.1" export read in place, as ``(image, class ids)`` items.

    The same dataset protocol as :class:`segzoo.data.folder.SegmentationFolder`.
    Everything but pixels is checked on construction (label map, subset lists,
    image/mask pairing); pixels are checked when an item loads. Nothing in the
    export is modified or extracted. Picklable: a zip opens lazily in each process.

    Args:
        path: the export folder or ``.zip``.
        images: folder of the original images, for an export made without
            "Save images"; matched by id (subfolders kept, extension in any case).
            When given, it is used even if the export has ``JPEGImages/``.
        binary: map every foreground label to class 1 (background stays 0).
            ``class_names`` become ``[background, <the one foreground label>]``,
            or ``[background, "foreground"]`` with the colour of the first
            foreground label when there are several.

    Attributes:
        root: ``path``.
        class_names: list of class names, index = class id (background = 0).
        colors: list of ``(r, g, b)``, index = class id.
        ignore_index: :data:`segzoo.constants.IGNORE_INDEX` (CVAT masks have no ignored pixels).
        ids: sorted item ids.
        unlabelled_ids: listed ids with no mask; their labels are all background.
        unlisted_ids: images left out: in no subset list and with no mask.
    """

    def __init__(self, path, images=None, binary=False):
        self.root = os.fspath(path)
        self._files = _open_files(path)
        names = self._files.names()
        self._prefix = _export_prefix(names, self._files)
        names = [n[len(self._prefix):] for n in names if n.startswith(self._prefix)]

        labelmap_source = self._describe(LABELMAP_FILE)
        labels = parse_labelmap(self._files.read_text(self._prefix + LABELMAP_FILE), labelmap_source)
        self._set_classes(labels, _background_index(labels, labelmap_source), binary)
        self._subsets = self._read_subsets(names)
        self._masks_dir = self._prefix + MASKS_DIR
        self._masks = index_by_id(_below(names, MASKS_DIR), (".png",),
                                  lambda n: self._files.describe(self._masks_dir + n))
        self._index_images(names, images)
        self._pair_up()

    # -- construction ---------------------------------------------------------

    def _describe(self, name: str) -> str:
        return self._files.describe(self._prefix + name)

    def _set_classes(self, labels, background, binary):
        """Class names and colours, and the colour -> id lookup of the masks."""
        order = [background] + [i for i in range(len(labels)) if i != background]
        if binary:
            foreground = order[1:]
            name = labels[foreground[0]][0] if len(foreground) == 1 else FOREGROUND_NAME
            self.class_names = [labels[background][0]] + ([name] if foreground else [])
            self.colors = [labels[background][1]] + ([labels[foreground[0]][1]] if foreground else [])
            class_of = {index: min(rank, 1) for rank, index in enumerate(order)}
        else:
            self.class_names = [labels[i][0] for i in order]
            self.colors = [labels[i][1] for i in order]
            class_of = {index: rank for rank, index in enumerate(order)}
        self.ignore_index = IGNORE_INDEX
        packed = _pack([color for _, color in labels])
        by_color = np.argsort(packed)
        self._color_keys = packed[by_color]
        self._color_ids = np.array([class_of[i] for i in by_color], dtype=np.uint8)

    def _read_subsets(self, names) -> dict[str, list[str]]:
        subsets = {}
        for filename in _below(names, SUBSETS_DIR):
            if "/" not in filename and filename.endswith(".txt"):
                lines = self._files.read_text(self._prefix + SUBSETS_DIR + filename).splitlines()
                ids = dict.fromkeys(line.strip() for line in lines if line.strip())
                subsets[filename[: -len(".txt")]] = list(ids)
        return subsets

    def _index_images(self, names, images):
        """Set where the images are (files, folder inside them) and id -> file name below it."""
        if images is not None:
            if not os.path.isdir(images):
                raise DataError(f"{images}: no such folder (images=, the folder of the original images).")
            self._image_files, self._images_dir = _FolderFiles(images), ""
            names = self._image_files.names()
        else:
            self._image_files, self._images_dir = self._files, self._prefix + IMAGES_DIR
            names = _below(names, IMAGES_DIR)
            if not names:
                raise DataError(
                    f"{self.root}: the export holds no images (no {IMAGES_DIR}; it was made without "
                    f"\"Save images\"). Pass images=<folder of the original images>, matched by id, "
                    f"or export again with \"Save images\" ticked."
                )
        self._images = index_by_id(names, IMAGE_EXTENSIONS,
                                   lambda n: self._image_files.describe(self._images_dir + n))

    def _pair_up(self):
        """Set ``ids``, ``unlabelled_ids`` and ``unlisted_ids``; raise on anything unpaired."""
        where = "in " + (self._image_files.describe(self._images_dir) if self._images_dir
                         else self._image_files.root)
        orphans = sorted(self._masks.keys() - self._images.keys())
        if orphans:
            listed = "\n  ".join(self.label_path(i) for i in orphans[:10])
            raise DataError(
                f"{len(orphans)} mask(s) have no image {where} (expected <id>.<image extension>):\n"
                f"  {listed}\nPass images= with the folder of the original images, or remove these masks."
            )
        for subset, ids in self._subsets.items():
            missing = [i for i in ids if i not in self._images]
            if missing:
                raise DataError(
                    f"{self._describe(SUBSETS_DIR + subset + '.txt')}: {len(missing)} listed id(s) have "
                    f"no image {where}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. "
                    f"Pass images= with the folder of the original images."
                )
        listed = {i for ids in self._subsets.values() for i in ids}
        self.ids = sorted(listed | self._masks.keys())
        if not self.ids:
            raise DataError(
                f"{self.root}: the export has no items (no ids in {SUBSETS_DIR} and no masks "
                f"in {MASKS_DIR}). Export a task with annotated images."
            )
        self.unlabelled_ids = sorted(listed - self._masks.keys())
        self.unlisted_ids = sorted(self._images.keys() - set(self.ids))
        if self.unlabelled_ids:
            logger.info("%s: %d of %d images have no mask (no annotation): their labels are all background.",
                        self.root, len(self.unlabelled_ids), len(self.ids))
        if self.unlisted_ids:
            logger.warning(
                "%s: left out %d image(s) %s that no subset list names and that have no mask (CVAT "
                "lists no image annotated only with tags, points or polylines): %s%s",
                self.root, len(self.unlisted_ids), where, ", ".join(self.unlisted_ids[:5]),
                " ..." if len(self.unlisted_ids) > 5 else "")

    # -- the dataset protocol -------------------------------------------------

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.class_names)

    @property
    def num_unlabelled(self) -> int:
        """Number of items with no mask (all background)."""
        return len(self.unlabelled_ids)

    def image_path(self, item_id: str) -> str:
        """The image of ``item_id``: a path, or ``"<zip>!<member>"`` inside a zip."""
        return self._image_files.describe(self._images_dir + self._images[item_id])

    def label_path(self, item_id: str) -> str | None:
        """The colour mask of ``item_id`` (path or ``"<zip>!<member>"``), or ``None`` when it has none."""
        mask = self._masks.get(item_id)
        return None if mask is None else self._files.describe(self._masks_dir + mask)

    def subsets(self) -> dict[str, list[str]]:
        """Subset name -> ids, from ``ImageSets/Segmentation/*.txt`` (``{"default": [...]}`` usually)."""
        return {name: list(ids) for name, ids in self._subsets.items()}

    def load(self, item_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Read one item: ``(image uint8 (H, W, 3) RGB, label uint8 (H, W) class ids)``.

        Raises:
            DataError: naming the file for a corrupt image or mask, naming both
                files when their sizes differ, and naming the mask, the colour
                and its pixel count for a colour that is not in ``labelmap.txt``.
        """
        image = self._image_files.read_image(self._images_dir + self._images[item_id])
        if item_id not in self._masks:
            return image, np.full(image.shape[:2], BACKGROUND_ID, dtype=np.uint8)
        mask_source = self.label_path(item_id)
        mask = self._files.read_color_mask(self._masks_dir + self._masks[item_id])
        if mask.shape[:2] != image.shape[:2]:
            raise DataError(
                f"{mask_source} is {mask.shape[1]}x{mask.shape[0]} but its image "
                f"{self.image_path(item_id)} is {image.shape[1]}x{image.shape[0]} (width x height). "
                f"The mask must have the size of the image it was drawn on."
            )
        return image, self._colors_to_ids(mask, mask_source)

    def _colors_to_ids(self, mask, source) -> np.ndarray:
        packed = _pack(mask)
        index = np.minimum(np.searchsorted(self._color_keys, packed), len(self._color_keys) - 1)
        known = self._color_keys[index] == packed
        if not known.all():
            colors, counts = np.unique(packed[~known], return_counts=True)
            listed = ", ".join(f"{_unpack(c)} ({n} pixels)" for c, n in zip(colors[:5], counts[:5]))
            raise DataError(
                f"{source}: colours not in {self._describe(LABELMAP_FILE)}: {listed}"
                f"{' ...' if len(colors) > 5 else ''}. Masks must use the label colours exactly "
                f"(no resizing or anti-aliasing); add the label or fix the mask."
            )
        return self._color_ids[index]

    def items(self):
        """Yield ``(item_id, image, label)`` for every item, in id order."""
        for item_id in self.ids:
            yield (item_id, *self.load(item_id))

    def __len__(self):
        return len(self.ids)


def _below(names, directory) -> list[str]:
    """The ``names`` inside ``directory`` (ending in ``/``), relative to it."""
    return [n[len(directory):] for n in names if n.startswith(directory)]


def _pack(rgb) -> np.ndarray:
    """``(..., 3)`` uint8 RGB -> ``(...)`` int32 ``0xRRGGBB``."""
    rgb = np.asarray(rgb, dtype=np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _unpack(packed) -> tuple[int, int, int]:
    packed = int(packed)
    return (packed >> 16) & 255, (packed >> 8) & 255, packed & 255


def read_cvat(path, images=None, binary=False) -> CvatDataset:
    """Read a CVAT "Segmentation mask 1.1" export (folder or ``.zip``); see :class:`CvatDataset`."""
    return CvatDataset(path, images=images, binary=binary)


def import_cvat(path, output_dir, images=None, binary=False, overwrite=False) -> str:
    """Convert a CVAT export into an ``rgb/`` + ``gt/`` folder (see :mod:`segzoo.data.folder`).

    Images are written as PNG, labels as class ids; CVAT's subset lists are
    kept in ``ImageSets/Segmentation``. The export is checked before anything
    is written, and the folder is built beside ``output_dir`` then moved into
    place, so a failure (a corrupt image, an unknown mask colour ...) leaves
    ``output_dir`` as it was. ``overwrite=True`` allows a non-empty
    ``output_dir``: files with the same names are replaced, others are kept.

    Returns:
        ``output_dir`` as a string.
    """
    output_dir = os.path.abspath(os.fspath(output_dir))
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise DataError(f"{output_dir}: the output folder is not empty. Choose a new folder or pass overwrite=True.")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise DataError(f"{output_dir}: exists and is not a folder.")
    for source in (path, images):
        if source is not None and os.path.isdir(source) and _is_within(output_dir, source):
            raise DataError(f"{output_dir}: inside {os.fspath(source)}, which is only read. Choose another folder.")
    dataset = read_cvat(path, images=images, binary=binary)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    # Not tempfile.mkdtemp: its folder is private (0700), and it becomes output_dir.
    staging = os.path.join(parent, f".{os.path.basename(output_dir)}.partial-{uuid.uuid4().hex[:12]}")
    os.mkdir(staging)
    try:
        writer = FolderWriter(staging, dataset.class_names, dataset.colors)
        for item_id in tqdm(dataset.ids, desc="Importing CVAT export", unit="image"):
            writer.write(item_id, *dataset.load(item_id))
        writer.write_subsets(dataset.subsets())
        _move_into(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("%s: imported %d images (%d with no mask) into %s.",
                path, len(dataset), dataset.num_unlabelled, output_dir)
    return output_dir


def _is_within(path, folder) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def _move_into(source, destination):
    """Move the folder ``source`` to ``destination``, merging into it when it exists."""
    if not os.path.exists(destination):
        os.rename(source, destination)
        return
    for dirpath, _, filenames in os.walk(source):
        target = os.path.join(destination, os.path.relpath(dirpath, source))
        os.makedirs(target, exist_ok=True)
        for filename in filenames:
            os.replace(os.path.join(dirpath, filename), os.path.join(target, filename))
