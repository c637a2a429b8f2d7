"""The ``rgb/`` + ``gt/`` folder: segzoo's on-disk layout of a labelled dataset.

::

    root/
      classes.json                      {"class_names": [...], "colors": [[r, g, b], ...],
                                         "ignore_index": 255}
      rgb/<id>.<ext>                    RGB images (png, jpg, ...)
      gt/<id>.png                       class ids, single-channel uint8 (255 = ignore)
      ImageSets/Segmentation/<subset>.txt   optional: one id per line (train, val, ...)
      overlays/                         optional colour overlays for people, never read

``<id>`` is the file name without its extension and may contain subfolders
(``batch_1/img_0001``), exactly as in a CVAT export. Images and labels are
paired by id, never by sorted order. Offline augmentation writes copies named
``<source id>_aug<k>`` (see :func:`source_id`), so that a split can keep every
copy of one source image on the same side. The same layout zipped (at the root
of the archive or under one top folder) is read in memory by
:class:`SegmentationZip`; :func:`segzoo.data.sources.open_dataset` opens
either, or a CVAT export.

:class:`SegmentationDataset` is the protocol every dataset reader follows
(these two and :class:`segzoo.data.cvat.CvatDataset`).
"""

from __future__ import annotations

import json
import logging
import os
import re

import numpy as np

from segzoo.constants import IGNORE_INDEX
from segzoo.data.io import (
    IMAGE_EXTENSIONS, TRANSPOSING_ORIENTATIONS, DataError, FolderFiles, ZipFiles, decode_image, decode_label,
    exif_orientation, find_root, write_image, write_label,
)
from segzoo.errors import option
from segzoo.files import check_output_folder

logger = logging.getLogger(__name__)

CLASSES_FILE = "classes.json"
IMAGES_DIR = "rgb"
LABELS_DIR = "gt"
SUBSETS_DIR = "ImageSets/Segmentation"

_AUGMENTED_SUFFIX = re.compile(r"_aug\d+$")


def augmented_id(source: str, index: int) -> str:
    """The id of augmented copy ``index`` (>= 1) of the item ``source``."""
    return f"{source}_aug{index:03d}"


def source_id(item_id: str) -> str:
    """The id of the source image an (augmented) item was made from."""
    return _AUGMENTED_SUFFIX.sub("", item_id)


def index_by_id(paths, extensions, describe=str) -> dict[str, str]:
    """Map id -> path for the ``/``-separated relative ``paths`` with an extension in ``extensions``.

    The id is the path without its extension (``batch_1/img_0001``); extensions
    match in any case (``frame_000000.PNG``). ``describe(path)`` names a file in
    the error raised when two files share an id.
    """
    found = {}
    for path in paths:
        stem, ext = os.path.splitext(path)
        if ext.lower() not in extensions:
            continue
        if stem in found:
            raise DataError(
                f"{describe(path)} and {describe(found[stem])}: two files share the id "
                f"'{stem}'. Keep one image per id."
            )
        found[stem] = path
    return found


def list_files(directory, extensions) -> dict[str, str]:
    """Map id -> path for the files below ``directory`` whose extension is in ``extensions``."""
    files = FolderFiles(directory)
    return {item_id: files.describe(name)
            for item_id, name in index_by_id(files.names(), extensions, files.describe).items()}


def read_subsets(files, folder: str, images=None, hint: str = "") -> dict[str, list[str]]:
    """Subset name -> ids from the ``<subset>.txt`` lists directly in ``folder`` of ``files``.

    ``files`` is a :class:`segzoo.data.io.FolderFiles` or ``ZipFiles``; a list
    holds one id per line (blank lines skipped, repeated ids kept once). When
    ``images`` (the ids that have an image) is given, a list naming another id
    raises :class:`DataError` naming the list, the ids and ``hint`` (the fix).
    """
    start = folder.rstrip("/") + "/"
    subsets = {
        filename[: -len(".txt")]: list(dict.fromkeys(
            line.strip() for line in files.read_text(start + filename).splitlines() if line.strip()))
        for filename in files.names(folder) if "/" not in filename and filename.endswith(".txt")
    }
    for name, ids in subsets.items():
        missing = [i for i in ids if images is not None and i not in images]
        if missing:
            raise DataError(
                f"{files.describe(f'{start}{name}.txt')}: {len(missing)} listed id(s) have no image: "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. {hint}".rstrip()
            )
    return subsets


class SizeMismatchError(DataError):
    """A label whose size is not its image's; ``image_size`` and ``label_size`` are ``(H, W)``."""

    def __init__(self, message, image_size, label_size):
        super().__init__(message)
        self.image_size, self.label_size = tuple(image_size), tuple(label_size)


def check_same_size(image, label, image_source, label_source, orientation=None) -> None:
    """Raise :class:`SizeMismatchError` naming both files when ``label``'s ``(H, W)`` is not ``image``'s.

    ``orientation``: the image file's EXIF orientation, when known. The rule
    everywhere in segzoo: an image's EXIF orientation is applied (as CVAT does
    when it shows it, so masks drawn in CVAT fit), a label or mask is never
    turned. A mismatch that a quarter turn explains says so.
    """
    image_shape, label_shape = np.shape(image), np.shape(label)
    if image_shape[:2] != label_shape:
        def size(shape):
            return "x".join(str(s) for s in shape[1::-1])

        hint = ""
        if tuple(image_shape[1::-1]) == tuple(label_shape):
            turned = (f"carries EXIF orientation {orientation}, a quarter turn, which segzoo applies"
                      if orientation in TRANSPOSING_ORIENTATIONS else
                      "may carry an EXIF orientation (phone photos do), which segzoo applies")
            hint = (f" The image {turned}, as CVAT does when it shows it; labels are never turned, so this one "
                    f"was drawn on the stored, unturned pixels. Draw the label on the turned image, or store "
                    f"the image upright without its EXIF orientation tag.")
        raise SizeMismatchError(
            f"{label_source} is {size(label_shape)} but its image {image_source} is {size(image_shape)} "
            f"(width x height, EXIF orientation applied). A label must have the size of its image.{hint}",
            image_shape[:2], label_shape[:2]
        )


def validate_classes(class_names, colors, source) -> None:
    """Check a class list: unique non-empty names, one unique RGB colour per class.

    Raises :class:`DataError` naming ``source`` (the file the list came from).
    """
    if len(class_names) != len(colors):
        raise DataError(f"{source}: {len(class_names)} class names but {len(colors)} colours.")
    if not class_names:
        raise DataError(f"{source}: no classes are defined.")
    if len(class_names) >= IGNORE_INDEX:
        raise DataError(f"{source}: {len(class_names)} classes; at most {IGNORE_INDEX} fit in uint8 labels.")
    seen_names, seen_colors = {}, {}
    for class_id, (name, color) in enumerate(zip(class_names, colors)):
        color = tuple(int(c) for c in color)
        if not name:
            raise DataError(f"{source}: class {class_id} has an empty name.")
        if len(color) != 3 or not all(0 <= c <= 255 for c in color):
            raise DataError(f"{source}: class '{name}' has colour {color}; expected three values 0..255.")
        if name in seen_names:
            raise DataError(f"{source}: the class name '{name}' appears twice (ids {seen_names[name]} and {class_id}).")
        if color in seen_colors:
            raise DataError(
                f"{source}: classes '{seen_colors[color]}' and '{name}' share the colour "
                f"{color}, so their masks cannot be told apart. Give each class its own colour."
            )
        seen_names[name], seen_colors[color] = class_id, name


class SegmentationDataset:
    """A labelled dataset read in place: the protocol of every segzoo dataset reader.

    Subclasses set ``root`` (the folder or archive), ``class_names``,
    ``colors`` (``(r, g, b)`` per class), ``ignore_index``, ``ids`` (sorted)
    and ``_files`` (their :class:`segzoo.data.io.FolderFiles` or ``ZipFiles``),
    and define ``load(id) -> (image uint8 (H, W, 3), label uint8 (H, W))``,
    ``image_path(id)``, ``label_path(id)`` and ``subsets()``. A reader of a zip
    holds it open: :meth:`close` it, or use ``with``. Readers pickle without
    their open archive.
    """

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.class_names)

    def items(self):
        """Yield ``(item_id, image, label)`` for every item, in id order."""
        for item_id in self.ids:
            yield (item_id, *self.load(item_id))

    def close(self) -> None:
        """Close the archive of a zip (it reopens if read again); nothing for a folder."""
        self._files.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __len__(self):
        return len(self.ids)


class SegmentationFolder(SegmentationDataset):
    """Reads an ``rgb/`` + ``gt/`` folder (see the module docstring).

    Attributes:
        root: the folder.
        class_names: list of class names, index = class id.
        colors: list of ``(r, g, b)`` tuples, index = class id.
        ignore_index: the label value that counts for nothing.
        ids: sorted list of item ids that have both an image and a label.

    Raises:
        DataError: when ``classes.json`` is missing or invalid, or when an image
            has no label or a label has no image (every unpaired file is named).
    """

    def __init__(self, root, label_values=None):
        self._set_label_values(label_values)
        self._read_layout(FolderFiles(root), "")

    def _set_label_values(self, label_values):
        """The lookup table of ``label_values``: stored value ``label_values[i]`` -> class id ``i``."""
        self.label_values = None if label_values is None else tuple(int(v) for v in label_values)
        self._lut = None
        if self.label_values is not None:
            values = self.label_values
            if len(set(values)) != len(values) or not all(0 <= v <= 255 for v in values) or len(values) < 2:
                raise DataError(f"{option('label_values')} {' '.join(map(str, values))}: give two or more "
                                f"different stored values 0..255, in class order (e.g. 0 255).")
            self._lut = np.arange(256, dtype=np.uint8)
            self._lut[list(values)] = np.arange(len(values), dtype=np.uint8)

    # Storage: every file is read through self._files, below self._prefix.
    def _walk(self, directory) -> list[str]:
        """The ``/``-separated paths, relative to ``directory``, of the files below it."""
        return self._files.names(self._prefix + directory)

    def _read(self, relative_path) -> bytes:
        return self._files.read(self._prefix + relative_path)

    def _locate(self, relative_path) -> str:
        """The path shown to people for a ``/``-separated path below the root."""
        return self._files.describe(self._prefix + relative_path)

    def _read_layout(self, files, prefix):
        """Read ``classes.json`` and pair images with labels, from ``files`` below ``prefix``."""
        self._files, self._prefix, self.root = files, prefix, files.root
        classes_path = self._locate(CLASSES_FILE)
        if not self._files.exists(prefix + CLASSES_FILE):
            raise DataError(
                f"{classes_path}: missing. An rgb/ + gt/ folder needs a classes.json with "
                f'"class_names" and "colors"; segzoo.data writers create it.'
            )
        try:
            meta = json.loads(self._files.read_text(prefix + CLASSES_FILE))
            self.class_names = list(meta["class_names"])
            if meta.get("colors") is None:  # optional: the palette fills in
                from segzoo.data.overlay import voc_palette

                meta["colors"] = voc_palette(len(self.class_names)).tolist()
            self.colors = [tuple(int(c) for c in color) for color in meta["colors"]]
        except KeyError as error:
            raise DataError(f"{classes_path}: not a valid classes file: it has no {error} entry; it needs "
                            f'"class_names" (a list), and optionally "colors" and "ignore_index".') from error
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            raise DataError(f"{classes_path}: not a valid classes file ({error}).") from error
        self.ignore_index = int(meta.get("ignore_index", IGNORE_INDEX))
        validate_classes(self.class_names, self.colors, classes_path)

        def index(directory, extensions):
            found = index_by_id(self._walk(directory), extensions,
                                lambda path: self._locate(f"{directory}/{path}"))
            return {item_id: f"{directory}/{path}" for item_id, path in found.items()}

        self._images = index(IMAGES_DIR, IMAGE_EXTENSIONS)
        self._labels = index(LABELS_DIR, (".png",))
        problems = [f"{self.image_path(i)}: image with no label (expected gt/{i}.png)"
                    for i in sorted(self._images.keys() - self._labels.keys())]
        problems += [f"{self.label_path(i)}: label with no image (expected rgb/{i}.<ext>)"
                     for i in sorted(self._labels.keys() - self._images.keys())]
        if problems:
            raise DataError(f"{self.root}: images and labels do not pair up:\n  " + "\n  ".join(problems))
        if not self._images:
            raise DataError(f"{self.root}: no images found in {IMAGES_DIR}/ (extensions {', '.join(IMAGE_EXTENSIONS)}).")
        self.ids = sorted(self._images)

    def image_path(self, item_id: str) -> str:
        """Path of the image of ``item_id``."""
        return self._locate(self._images[item_id])

    def label_path(self, item_id: str) -> str:
        """Path of the label of ``item_id``."""
        return self._locate(self._labels[item_id])

    def subsets(self) -> dict[str, list[str]]:
        """Subset name -> ids, from ``ImageSets/Segmentation`` (empty when absent)."""
        return read_subsets(self._files, self._prefix + SUBSETS_DIR, self._images,
                            f"Add their images to {IMAGES_DIR}/ or remove them from the list.")

    def read_encoded(self, item_id: str) -> tuple[bytes, bytes]:
        """The encoded files of one item, as stored: ``(image bytes, label PNG bytes)``."""
        return self._read(self._images[item_id]), self._read(self._labels[item_id])

    def decode(self, item_id: str, encoded_image: bytes, encoded_label: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Decode and check the files of ``item_id`` (see :meth:`load`)."""
        image_path, label_path = self.image_path(item_id), self.label_path(item_id)
        image, label = decode_image(encoded_image, image_path), self._decode_label(encoded_label, label_path)
        orientation = exif_orientation(encoded_image)
        check_same_size(image, label, image_path, label_path, orientation)
        if orientation != 1 and not getattr(self, "_told_exif", False):
            self._told_exif = True
            logger.warning("%s carries EXIF orientation %d: segzoo turns it as CVAT does when it shows it, and "
                           "takes its label %s to be drawn on the turned image (labels are never turned). If "
                           "labels were drawn on the stored pixels, store the images upright without the tag. "
                           "(Said once per dataset.)", image_path, orientation, label_path)
        check_label_values(label, self.num_classes, self.ignore_index, label_path)
        return image, label

    def _decode_label(self, encoded_label: bytes, label_path: str) -> np.ndarray:
        label = decode_label(encoded_label, label_path)
        if self._lut is None:
            return label
        stored = np.unique(label)
        unknown = [int(v) for v in stored if v not in self.label_values and v != self.ignore_index]
        if unknown:
            raise DataError(f"{label_path}: stored label values {unknown[:5]} are not among "
                            f"{option('label_values')} {' '.join(map(str, self.label_values))}.")
        return self._lut[label]

    def read_label(self, item_id: str) -> np.ndarray:
        """The label of ``item_id`` alone, as class ids (``label_values`` applied), unchecked: ``uint8 (H, W)``."""
        return self._decode_label(self._read(self._labels[item_id]), self.label_path(item_id))

    def load(self, item_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Read one item: ``(image uint8 (H, W, 3), label uint8 (H, W))``.

        Raises:
            DataError: naming both files when their sizes differ, naming the
                label when it holds a value that is neither a class id nor
                ``ignore_index``, and naming a file that cannot be decoded.
        """
        return self.decode(item_id, *self.read_encoded(item_id))


class SegmentationZip(SegmentationFolder):
    """Reads the ``rgb/`` + ``gt/`` layout from a zip archive, members read in memory.

    ``classes.json``, ``rgb/`` and ``gt/`` sit at the root of the archive or
    under one top folder (``dataset/rgb/...``). Nothing is extracted; member
    names are checked by :func:`segzoo.data.io.open_zip`. Paths in messages
    read ``archive.zip!member``. The archive opens lazily, once per process
    (:class:`segzoo.data.io.ZipFiles`); :meth:`close` (or ``with``) closes it.
    """

    def __init__(self, path, label_values=None):
        self._set_label_values(label_values)
        files = ZipFiles(path)
        try:
            prefix = find_root(files.names(), CLASSES_FILE)
            if prefix is None:
                raise DataError(
                    f"{files.root}: no {CLASSES_FILE} at the root of the archive or under a single top "
                    f"folder. The archive must hold {CLASSES_FILE}, {IMAGES_DIR}/ and {LABELS_DIR}/."
                )
            self._read_layout(files, prefix)
        except BaseException:
            files.close()
            raise


def check_label_values(label, num_classes, ignore_index, source) -> None:
    """Raise :class:`DataError` naming ``source`` if ``label`` has ids outside ``[0, num_classes)``.

    ``ignore_index`` is allowed. The message gives the bad values and their pixel counts.
    """
    values, counts = np.unique(label, return_counts=True)
    bad = [(int(v), int(c)) for v, c in zip(values, counts) if v >= num_classes and v != ignore_index]
    if bad:
        listed = ", ".join(f"{v} ({c} pixels)" for v, c in bad[:5])
        raise DataError(
            f"{source}: label values {listed} are not class ids: there are {num_classes} "
            f"classes (0..{num_classes - 1}) and {ignore_index} means ignore. Masks stored "
            f"as 0/255 must be converted to 0/1 first."
        )


class FolderWriter:
    """Writes an ``rgb/`` + ``gt/`` folder.

    Refuses to write into a folder that already holds files (nothing is ever
    silently overwritten) unless ``overwrite=True``, and refuses to write the
    same id twice.

    Args:
        root: the output folder.
        class_names: list of class names, index = class id.
        colors: list of ``(r, g, b)``, index = class id.
        image_format: extension for images, ``".png"`` (lossless) or ``".jpg"``.
        overwrite: allow writing into a non-empty folder.
    """

    def __init__(self, root, class_names, colors, image_format=".png", overwrite=False):
        self.root = os.fspath(root)
        validate_classes(class_names, colors, "class list")
        check_output_folder(self.root, overwrite=overwrite)
        if image_format not in (".png", ".jpg"):
            raise DataError(f"image_format must be '.png' or '.jpg', got {image_format!r}.")
        os.makedirs(self.root, exist_ok=True)
        self.class_names = list(class_names)
        self.colors = [tuple(int(c) for c in color) for color in colors]
        self.image_format = image_format
        self.written: set[str] = set()
        with open(os.path.join(self.root, CLASSES_FILE), "w", encoding="utf-8") as f:
            json.dump({"class_names": self.class_names, "colors": [list(c) for c in self.colors],
                       "ignore_index": IGNORE_INDEX}, f, indent=2)

    def write(self, item_id: str, image: np.ndarray, label: np.ndarray) -> None:
        """Write one image and its label under ``item_id``."""
        self._write_label(item_id, np.shape(image), label)
        write_image(os.path.join(self.root, IMAGES_DIR, item_id + self.image_format), image)

    def write_encoded(self, item_id: str, encoded_image: bytes, extension: str, image_shape, label) -> None:
        """Write one item whose image is already encoded: its bytes are stored unchanged.

        ``extension`` (``".jpg"``) names ``rgb/<item_id><extension>``; ``image_shape``
        is the ``(H, W)`` of the decoded image, EXIF orientation applied, which
        ``label`` must have.
        """
        self._write_label(item_id, tuple(image_shape), label)
        path = os.path.join(self.root, IMAGES_DIR, item_id + extension)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(encoded_image)

    def _write_label(self, item_id, image_shape, label) -> None:
        """Check the id and ``label`` (against the image's ``image_shape``), then write ``gt/<item_id>.png``."""
        if item_id in self.written:
            raise DataError(f"{self.root}: the id '{item_id}' was written twice.")
        check_same_size(np.broadcast_to(np.uint8(0), image_shape), label, repr(item_id),
                        f"{self.root}: the label of {item_id!r}")
        check_label_values(label, len(self.class_names), IGNORE_INDEX, f"label of {item_id}")
        write_label(os.path.join(self.root, LABELS_DIR, item_id + ".png"), label)
        self.written.add(item_id)

    def write_subsets(self, subsets: dict[str, list[str]]) -> None:
        """Write ``ImageSets/Segmentation/<subset>.txt`` lists (ids must have been written)."""
        directory = os.path.join(self.root, SUBSETS_DIR)
        os.makedirs(directory, exist_ok=True)
        for name, ids in subsets.items():
            missing = [i for i in ids if i not in self.written]
            if missing:
                raise DataError(f"subset '{name}' lists ids that were not written: {missing[:5]}")
            with open(os.path.join(directory, name + ".txt"), "w", encoding="utf-8") as f:
                f.writelines(i + "\n" for i in ids)
