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
import uuid

import numpy as np
from tqdm import tqdm

from segzoo.constants import BACKGROUND_ID, IGNORE_INDEX
from segzoo.errors import option
from segzoo.files import check_output_folder
from segzoo.data.folder import (
    SUBSETS_DIR, FolderWriter, SegmentationDataset, check_same_size, index_by_id, read_subsets, validate_classes,
)
from segzoo.data.io import (
    IMAGE_EXTENSIONS, DataError, FolderFiles, decode_color_mask, decode_image, exif_orientation, find_root,
    open_files,
)

logger = logging.getLogger(__name__)

LABELMAP_FILE = "labelmap.txt"
MASKS_DIR = "SegmentationClass/"
IMAGES_DIR = "JPEGImages/"

#: Name of the single foreground class in ``binary=True`` mode when the export has several.
FOREGROUND_NAME = "foreground"


def parse_labelmap(text: str, source: str = LABELMAP_FILE) -> list[tuple[str, tuple[int, int, int]]]:
    """Parse a CVAT ``labelmap.txt``: ``[(name, (r, g, b)), ...]`` in file order.

    Lines are ``name:R,G,B:parts:actions``; empty lines and ``#`` comments are
    skipped; names may hold spaces (and colons); a leading byte-order mark is dropped. Duplicated names or colours
    raise :class:`DataError` naming ``source``.
    """
    labels = []
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors save
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


class CvatDataset(SegmentationDataset):
    """A CVAT "Segmentation mask 1.1" export read in place, as ``(image, class ids)`` items.

    The protocol of :class:`segzoo.data.folder.SegmentationDataset`.
    Everything but pixels is checked on construction (label map, subset lists,
    image/mask pairing); pixels are checked when an item loads. Nothing in the
    export is modified or extracted. Picklable: a zip opens lazily in each
    process; :meth:`close` (or ``with``) closes it.

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
        self._files = open_files(path)
        try:
            self._prefix = find_root(self._files.names(), LABELMAP_FILE)
            if self._prefix is None:
                raise DataError(
                    f"{self._files.describe(LABELMAP_FILE)}: missing, so this is not a CVAT \"Segmentation "
                    f"mask 1.1\" export (or it is empty). Export the task with that format."
                )
            labelmap_source = self._describe(LABELMAP_FILE)
            labels = parse_labelmap(self._files.read_text(self._prefix + LABELMAP_FILE), labelmap_source)
            self._set_classes(labels, _background_index(labels, labelmap_source), binary)
            self._masks_dir = self._prefix + MASKS_DIR
            self._masks = index_by_id(self._files.names(self._masks_dir), (".png",),
                                      lambda n: self._files.describe(self._masks_dir + n))
            if not self._masks:
                self._check_masks_beside_labelmap()
            self._index_images(images)
            self._pair_up()
        except BaseException:
            self.close()
            raise

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
        self._color_table = ColorTable([color for _, color in labels], [class_of[i] for i in range(len(labels))])

    def _check_masks_beside_labelmap(self):
        """Raise when the masks sit in a folder other than the label map's (a common repository layout)."""
        marker = "/" + MASKS_DIR
        elsewhere = sorted({("/" + n)[: ("/" + n).index(marker) + len(marker)].lstrip("/")
                            for n in self._files.names() if marker in "/" + n and n.lower().endswith(".png")})
        if elsewhere:
            raise DataError(
                f"{self._describe(LABELMAP_FILE)} has no {MASKS_DIR} beside it, but masks are in "
                f"{self._files.describe(elsewhere[0])}. A CVAT export keeps labelmap.txt, {MASKS_DIR} and "
                f"ImageSets/ in one folder: move labelmap.txt into "
                f"{self._files.describe(elsewhere[0][:-len(MASKS_DIR)])} (or point the data path at a folder "
                f"that holds all three).")

    def _index_images(self, images):
        """Set where the images are (files, folder inside them) and id -> file name below it."""
        if images is not None:
            if not os.path.isdir(images):
                raise DataError(f"{images}: no such folder ({option('images')}: the folder of the original "
                                f"images).")
            self._image_files, self._images_dir = FolderFiles(images), ""
        else:
            self._image_files, self._images_dir = self._files, self._prefix + IMAGES_DIR
        names = self._image_files.names(self._images_dir)
        if images is None and not names:
            raise DataError(
                f"{self.root}: the export holds no images (no {IMAGES_DIR}; it was made without "
                f"\"Save images\"). Pass {option('images')} with the folder of the original images (matched by id), "
                f"or export again with \"Save images\" ticked."
            )
        self._images = index_by_id(names, IMAGE_EXTENSIONS,
                                   lambda n: self._image_files.describe(self._images_dir + n))

    def _pair_up(self):
        """Read the subset lists; set ``ids``, ``unlabelled_ids`` and ``unlisted_ids``; raise on anything unpaired."""
        where = "in " + (self._image_files.describe(self._images_dir) if self._images_dir
                         else self._image_files.root)
        orphans = sorted(self._masks.keys() - self._images.keys())
        if orphans:
            listed = "\n  ".join(self.label_path(i) for i in orphans[:10])
            raise DataError(
                f"{len(orphans)} mask(s) have no image {where} (expected <id>.<image extension>):\n"
                f"  {listed}\nPass {option('images')} with the folder of the original images, or remove "
                f"these masks."
            )
        self._subsets = read_subsets(
            self._files, self._prefix + SUBSETS_DIR, self._images,
            f"Images are looked for {where}; pass {option('images')} with the folder of the original images.")
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
        image_source = self.image_path(item_id)
        encoded = self._image_files.read(self._images_dir + self._images[item_id])
        image = decode_image(encoded, image_source)
        if item_id not in self._masks:
            return image, np.full(image.shape[:2], BACKGROUND_ID, dtype=np.uint8)
        mask_source = self.label_path(item_id)
        mask = decode_color_mask(self._files.read(self._masks_dir + self._masks[item_id]), mask_source)
        check_same_size(image, mask[..., 0], image_source, mask_source, exif_orientation(encoded))
        return image, self._color_table.lookup(mask, mask_source, self._describe(LABELMAP_FILE), "add the label")


class ColorTable:
    """Exact lookup of colour masks: the colour ``colors[i]`` (``(r, g, b)``) is the class ``ids[i]``."""

    def __init__(self, colors, ids):
        packed = _pack(colors)
        by_color = np.argsort(packed)
        self._keys = packed[by_color]
        self._ids = np.asarray(ids, dtype=np.uint8)[by_color]

    def lookup(self, mask, source, known_from, fix) -> np.ndarray:
        """Class ids ``uint8 (H, W)`` of the RGB ``uint8 (H, W, 3)`` ``mask`` read from ``source``.

        Raises :class:`DataError` naming ``source``, each unknown colour and its
        pixel count, ``known_from`` (where the colours were declared) and ``fix``.
        """
        packed = _pack(mask)
        index = np.minimum(np.searchsorted(self._keys, packed), len(self._keys) - 1)
        known = self._keys[index] == packed
        if not known.all():
            colors, counts = np.unique(packed[~known], return_counts=True)
            listed = ", ".join(f"{_unpack(c)} ({n} pixels)" for c, n in zip(colors[:5], counts[:5]))
            raise DataError(
                f"{source}: colours not in {known_from}: {listed}"
                f"{' ...' if len(colors) > 5 else ''}. Masks must use the label colours exactly "
                f"(no resizing or anti-aliasing); {fix} or fix the mask."
            )
        return self._ids[index]


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


def import_cvat(path, output_dir, images=None, binary=False, overwrite=False, name=None) -> str:
    """Convert a CVAT export into an ``rgb/`` + ``gt/`` folder (see :mod:`segzoo.data.folder`).

    Images are written as PNG, labels as class ids; CVAT's subset lists are
    kept in ``ImageSets/Segmentation``. The export is checked before anything
    is written, and the folder is built beside ``output_dir`` then moved into
    place, so a failure (a corrupt image, an unknown mask colour ...) leaves
    ``output_dir`` as it was. ``overwrite=True`` allows a non-empty
    ``output_dir``: files with the same names are replaced, others are kept.
    ``name`` is the folder the log names instead of ``output_dir`` (a caller
    that stages the import itself names its final folder, not the temporary one).

    Returns:
        ``output_dir`` as a string.
    """
    output_dir = check_output_folder(output_dir, (path,), overwrite, input_folders=[
        source for source in (path, images) if source is not None and os.path.isdir(source)])
    parent = os.path.dirname(output_dir)
    with read_cvat(path, images=images, binary=binary) as dataset:
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
                path, len(dataset), dataset.num_unlabelled, name or output_dir)
    return output_dir


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
