"""Inspect a labelled dataset before training: what it holds, and what is likely a mistake.

:func:`inspect` reads every item of any source training accepts (a CVAT export
as a folder or zip, an ``rgb/`` + ``gt/`` folder or zip, a built TFDS dataset
name) once and reports, in a :class:`DatasetReport`:

- the number of items and of annotated items (CVAT: items with a mask; other
  sources: labels with at least one pixel that is neither background nor ignored);
- image sizes; per class, its share of the labelled pixels and the number of
  images holding it, overall and per split; classes declared but never present;
  the share of ignored pixels;
- masks that are all one class, items whose image and label sizes differ,
  items that cannot be read, and duplicate images (same decoded pixels);
- suggested class weights (median-frequency balancing over the training split,
  :func:`median_frequency_weights`), which ``class_weights="auto"`` in training uses;
- warnings for what is likely a mistake (:meth:`DatasetReport.warnings`).

:func:`write_report` writes ``report.json``, ``class_frequency.png`` (a bar
chart) and ``contact_sheet.png`` (overlays of a few items).
:func:`check_training_data` is what training runs at its start: the same
report, its warnings logged (never raised).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import os

import cv2
import numpy as np
from tqdm.auto import tqdm

from segzoo.constants import BACKGROUND_ID
from segzoo.data.cvat import CvatDataset
from segzoo.data.datasource import is_path, tfds_builder
from segzoo.data.folder import SizeMismatchError
from segzoo.data.io import DataError
from segzoo.data.overlay import overlay_label
from segzoo.data.sources import open_dataset
from segzoo.data.splits import DEFAULT_VAL_RATIO, TEST, TRAIN, VALIDATION, split_ids
from segzoo.files import write_json

logger = logging.getLogger(__name__)

REPORT_FILE = "report.json"
CHART_FILE = "class_frequency.png"
CONTACT_SHEET_FILE = "contact_sheet.png"
_THUMBNAIL = 256  # longest side of a contact-sheet picture, pixels
_LISTED = 10  # ids listed per finding in the printed table


@dataclasses.dataclass
class DatasetReport:
    """What :func:`inspect` found (see the module docstring); :meth:`to_dict` is ``report.json``.

    Attributes:
        source: the path or TFDS name inspected.
        kind: ``"cvat"``, ``"rgb_gt"`` or ``"tfds"``.
        class_names, colors: the declared classes, index = class id.
        ignore_index: the label value of ignored pixels.
        num_items, num_annotated: items, and items with an annotation.
        unannotated_ids: ids of the items without one.
        image_sizes: ``"WxH"`` -> number of images.
        class_pixels: labelled pixels per class (ignored pixels excluded), ``(C,)`` int.
        class_images: images holding each class, ``(C,)`` int.
        image_pixels: labelled pixels of the images holding each class, ``(C,)`` int.
        ignore_pixels, total_pixels: ignored pixels, and every label pixel.
        splits: split name -> ``{"ids": [...], "class_pixels": [...], "class_images": [...],
            "image_pixels": [...]}`` (``image_pixels``: pixels of the images holding each class).
        single_class: ``[(id, class name)]``: annotated labels that are all one class.
        size_mismatches: ``[(id, (H, W) of the image, (H, W) of the label)]``.
        unreadable: ``[(id, message)]``.
        duplicates: groups (lists) of ids whose images have the same pixels.
        samples: ``[(id, overlay uint8 (h, w, 3))]`` for the contact sheet (not in ``report.json``).
    """

    source: str
    kind: str
    class_names: list
    colors: list
    ignore_index: int
    num_items: int = 0
    num_annotated: int = 0
    unannotated_ids: list = dataclasses.field(default_factory=list)
    image_sizes: dict = dataclasses.field(default_factory=dict)
    class_pixels: np.ndarray = None
    class_images: np.ndarray = None
    image_pixels: np.ndarray = None
    ignore_pixels: int = 0
    total_pixels: int = 0
    splits: dict = dataclasses.field(default_factory=dict)
    single_class: list = dataclasses.field(default_factory=list)
    size_mismatches: list = dataclasses.field(default_factory=list)
    unreadable: list = dataclasses.field(default_factory=list)
    duplicates: list = dataclasses.field(default_factory=list)
    samples: list = dataclasses.field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """Number of declared classes, background included."""
        return len(self.class_names)

    @property
    def pixel_shares(self) -> np.ndarray:
        """Share of the labelled (not ignored) pixels of each class, ``(C,)`` float in 0..1."""
        return self.class_pixels / max(int(self.class_pixels.sum()), 1)

    @property
    def absent_classes(self) -> list[str]:
        """Declared classes that no label holds."""
        return [name for name, count in zip(self.class_names, self.class_pixels) if count == 0]

    def absent_in(self, split: str) -> list[str]:
        """Declared classes that no label of ``split`` holds (``[]`` for a split that does not exist)."""
        if split not in self.splits:
            return []
        return [n for n, c in zip(self.class_names, self.splits[split]["class_pixels"]) if c == 0]

    @property
    def class_weights(self) -> list[float]:
        """Median-frequency class weights over the training split (every item when there is none)."""
        split = self.splits.get(TRAIN)
        if split is None:
            return median_frequency_weights(self.class_pixels, self.image_pixels)
        return median_frequency_weights(split["class_pixels"], split["image_pixels"])

    def warnings(self) -> list[str]:
        """What is likely a mistake, one sentence each (with the fix)."""
        found = []
        unannotated = self.num_items - self.num_annotated
        if self.num_items and unannotated > self.num_items / 2:
            found.append(
                f"{unannotated} of {self.num_items} images ({100 * unannotated / self.num_items:.0f}%) have no "
                f"annotation: each is trained as all background. If they show objects, label them in CVAT (segzoo "
                f"predict --format cvat gives pre-annotations to correct), or leave them out of the task.")
        absent = self.absent_in(TRAIN) if TRAIN in self.splits else self.absent_classes
        if absent:
            where = "the training split" if TRAIN in self.splits else "the dataset"
            found.append(
                f"{len(absent)} of {self.num_classes} declared classes never occur in {where}: "
                f"{', '.join(absent)}. Each still costs the model an output channel and pulls mean IoU down: "
                f"label examples of them, or delete them from the label map.")
        validation = self.splits.get(VALIDATION)
        if validation is not None and validation["ids"] and not np.delete(
                validation["class_pixels"], BACKGROUND_ID).any():
            found.append(
                f"the validation split ({len(validation['ids'])} images) has no foreground pixels: its mean IoU "
                f"measures background only. Put annotated images in it (ImageSets/Segmentation/val.txt) or "
                f"change the split (val_ratio, seed).")
        if self.size_mismatches:
            found.append(f"{len(self.size_mismatches)} item(s) have a label of another size than their image, "
                         f"e.g. {self.size_mismatches[0][0]}: training stops at them. Re-export those masks.")
        if self.unreadable:
            found.append(f"{len(self.unreadable)} item(s) cannot be read, e.g. {self.unreadable[0][1]}")
        if self.duplicates:
            found.append(f"{len(self.duplicates)} group(s) of identical images, e.g. "
                         f"{', '.join(self.duplicates[0][:3])}: a copy in both splits leaks training data into "
                         f"validation. Keep one of each.")
        single = [item_id for item_id, name in self.single_class if name != self.class_names[BACKGROUND_ID]]
        if single:
            found.append(f"{len(single)} annotated mask(s) are all one foreground class, e.g. {single[0]}: in a "
                         f"CVAT export this is what a background label that is not black gives.")
        return found

    def to_dict(self) -> dict:
        """The report as JSON-ready values (``report.json``)."""
        shares = self.pixel_shares
        weights = self.class_weights
        return {
            "source": self.source, "kind": self.kind, "num_items": self.num_items,
            "num_annotated": self.num_annotated, "unannotated_ids": self.unannotated_ids,
            "image_sizes": self.image_sizes,
            "classes": [{"id": i, "name": name, "color": list(map(int, color)), "pixels": int(self.class_pixels[i]),
                         "pixel_share": float(shares[i]), "images": int(self.class_images[i]),
                         "suggested_weight": weights[i]}
                        for i, (name, color) in enumerate(zip(self.class_names, self.colors))],
            "absent_classes": self.absent_classes,
            "ignore_index": self.ignore_index,
            "ignore_pixel_share": self.ignore_pixels / max(self.total_pixels, 1),
            "splits": {name: {"items": len(split["ids"]), "absent_classes": self.absent_in(name),
                              "class_pixels": [int(v) for v in split["class_pixels"]],
                              "class_images": [int(v) for v in split["class_images"]]}
                       for name, split in self.splits.items()},
            "single_class_masks": [{"id": i, "class": name} for i, name in self.single_class],
            "size_mismatches": [{"id": i, "image_size": list(a), "label_size": list(b)}
                                for i, a, b in self.size_mismatches],
            "unreadable": [{"id": i, "error": message} for i, message in self.unreadable],
            "duplicates": self.duplicates,
            "suggested_class_weights": weights,
            "warnings": self.warnings(),
        }


def median_frequency_weights(class_pixels, image_pixels) -> list[float]:
    """Median-frequency balancing (Eigen and Fergus 2015): ``weight_c = median(freq) / freq_c``.

    ``freq_c`` is the pixels of class ``c`` over the pixels of the images that
    hold ``c``; the median runs over the classes present. A class that never
    occurs gets weight 1 (it has no pixel to weigh). Weights are rounded to 4 digits.

    Args:
        class_pixels: ``(C,)`` labelled pixels per class.
        image_pixels: ``(C,)`` pixels of the images holding each class.
    """
    class_pixels = np.asarray(class_pixels, np.float64)
    image_pixels = np.asarray(image_pixels, np.float64)
    present = class_pixels > 0
    if not present.any():
        return [1.0] * len(class_pixels)
    frequency = np.where(present, class_pixels / np.maximum(image_pixels, 1.0), 0.0)
    median = float(np.median(frequency[present]))
    return [round(median / f, 4) if p else 1.0 for f, p in zip(frequency, present)]


def _open(data, images, binary, data_dir):
    """``(kind, reader or TFDS builder)`` for ``data``."""
    if is_path(data):
        reader = open_dataset(data, images=images, binary=binary)
        return ("cvat" if isinstance(reader, CvatDataset) else "rgb_gt"), reader
    if images is not None or binary:
        raise DataError(f"{data}: a TFDS dataset; images= and binary= apply to CVAT exports only. Drop them.")
    return "tfds", tfds_builder(data, data_dir)


def _tfds_items(builder):
    """``(split, id, image, label, None)`` of every example of every split of a TFDS builder."""
    import tensorflow_datasets as tfds

    for split in builder.info.splits:
        for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
            yield split, example["id"].decode("utf-8"), example["image"], example["label"][..., 0], None


def _reader_items(reader, side):
    """``(split, id, image or None, label or None, error or None)`` of every item of a reader."""
    for item_id in reader.ids:
        try:
            image, label = reader.load(item_id)
        except DataError as error:  # a SizeMismatchError too
            yield side.get(item_id), item_id, None, None, error
            continue
        yield side.get(item_id), item_id, image, label, None


def inspect(data, images=None, binary=False, data_dir=None, val_ratio=DEFAULT_VAL_RATIO, seed=0, samples=8,
            progress=True) -> DatasetReport:
    """Read every item of ``data`` once and report on it (see the module docstring).

    Args:
        data: a CVAT export (folder or zip), an ``rgb/`` + ``gt/`` folder or zip,
            a folder holding one zip of either, or a built TFDS dataset name.
        images: CVAT export saved without images: the folder of the originals.
        binary: CVAT export: merge every foreground label into one class, as training with ``--binary`` does.
        data_dir: TFDS data directory, for a TFDS name.
        val_ratio, seed: the split made when the data has no split lists (use training's values).
        samples: items kept as overlays for the contact sheet.
        progress: show a progress bar.

    Raises:
        DataError: as :func:`segzoo.data.open_dataset` does for a path that is
            no dataset, or for subset lists that make no split. Unreadable items
            do not raise: they are reported.
    """
    kind, opened = _open(data, images, binary, data_dir)
    try:
        if kind == "tfds":
            meta = opened.info.metadata
            names, colors, ignore = list(meta["class_names"]), [tuple(c) for c in meta["colors"]], int(
                meta["ignore_index"])
            total = sum(split.num_examples for split in opened.info.splits.values())
            items = _tfds_items(opened)
            unlabelled = sample_ids = None
        else:
            names, colors, ignore = list(opened.class_names), list(opened.colors), opened.ignore_index
            split = split_ids(opened.ids, opened.subsets(), val_ratio, seed, where=opened.root)
            side = {i: name for name in (TRAIN, VALIDATION, TEST) for i in split.ids(name)}
            total, items = len(opened.ids), _reader_items(opened, side)
            unlabelled = set(opened.unlabelled_ids) if kind == "cvat" else None
            # the contact sheet shows annotated items first (an export may be mostly empty frames)
            order = [i for i in opened.ids if i not in (unlabelled or ())] + sorted(unlabelled or ())
            sample_ids = {order[int(k)] for k in np.linspace(0, len(order) - 1, min(samples, len(order))).round()} \
                if samples > 0 and order else set()
        report = DatasetReport(source=os.fspath(data), kind=kind, class_names=names, colors=colors,
                               ignore_index=ignore, class_pixels=np.zeros(len(names), np.int64),
                               class_images=np.zeros(len(names), np.int64),
                               image_pixels=np.zeros(len(names), np.int64))
        _collect(report, items, total, unlabelled, samples, sample_ids, progress)
    finally:
        if kind != "tfds":
            opened.close()
    return report


def _collect(report, items, total, unlabelled, samples, sample_ids, progress):
    """Fill ``report`` from ``items``; keep overlays of the ids ``sample_ids`` (``None``: ``samples``
    items evenly spaced in reading order)."""
    num_classes = report.num_classes
    sizes, hashes = collections.Counter(), collections.defaultdict(list)
    sample_at = set(np.linspace(0, max(total - 1, 0), min(samples, total)).round().astype(int).tolist()) \
        if samples > 0 and sample_ids is None else set()
    for index, (split, item_id, image, label, error) in enumerate(
            tqdm(items, total=total, desc="inspecting", unit="image", disable=not progress)):
        report.num_items += 1
        if error is not None:
            if isinstance(error, SizeMismatchError):
                report.size_mismatches.append((item_id, error.image_size, error.label_size))
            else:
                report.unreadable.append((item_id, str(error)))
            continue
        sizes[f"{image.shape[1]}x{image.shape[0]}"] += 1
        hashes[hashlib.sha1(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()].append(
            item_id)
        counts = np.bincount(label.ravel(), minlength=256)
        ignored = int(counts[report.ignore_index]) if report.ignore_index < 256 else 0
        counts = counts[:num_classes].astype(np.int64)
        present = counts > 0
        report.class_pixels += counts
        report.class_images += present
        report.image_pixels += present * int(counts.sum())
        report.ignore_pixels += ignored
        report.total_pixels += label.size
        annotated = (item_id not in unlabelled) if unlabelled is not None else bool(
            np.delete(counts, BACKGROUND_ID).any())
        if annotated:
            report.num_annotated += 1
            if present.sum() == 1 and not ignored:
                report.single_class.append((item_id, report.class_names[int(np.argmax(present))]))
        else:
            report.unannotated_ids.append(item_id)
        if split is not None:
            entry = report.splits.setdefault(split, {"ids": [], "class_pixels": np.zeros(num_classes, np.int64),
                                                     "class_images": np.zeros(num_classes, np.int64),
                                                     "image_pixels": np.zeros(num_classes, np.int64)})
            entry["ids"].append(item_id)
            entry["class_pixels"] += counts
            entry["class_images"] += present
            entry["image_pixels"] += present * int(counts.sum())
        if index in sample_at or (sample_ids is not None and item_id in sample_ids):
            report.samples.append((item_id, _thumbnail(overlay_label(image, label, report.colors,
                                                                     report.ignore_index))))
    report.image_sizes = dict(sizes.most_common())
    report.duplicates = [sorted(ids) for ids in hashes.values() if len(ids) > 1]


def _thumbnail(image):
    scale = _THUMBNAIL / max(image.shape[:2])
    if scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                      interpolation=cv2.INTER_AREA)


def format_report(report: DatasetReport) -> str:
    """The report as a table for people, with its warnings and the suggested class weights."""
    shares, weights = report.pixel_shares, report.class_weights
    lines = [f"{report.source} ({report.kind}): {report.num_items} items, {report.num_annotated} annotated",
             "image sizes (W x H): " + ", ".join(f"{s} ({n})" for s, n in report.image_sizes.items())]
    splits = [s for s in (TRAIN, VALIDATION) if s in report.splits] + sorted(set(report.splits) - {TRAIN, VALIDATION})
    width = max(len("class"), *(len(n) for n in report.class_names))
    header = f"{'class':<{width}}  {'id':>3}  {'colour':<11}  {'pixels %':>8}  {'images':>6}"
    header += "".join(f"  {s[:10] + ' img':>14}" for s in splits) + f"  {'weight':>7}"
    lines += ["", header, "-" * len(header)]
    for i, name in enumerate(report.class_names):
        row = (f"{name:<{width}}  {i:>3}  {','.join(map(str, report.colors[i])):<11}  {100 * shares[i]:>8.3f}  "
               f"{int(report.class_images[i]):>6}")
        row += "".join(f"  {int(report.splits[s]['class_images'][i]):>14}" for s in splits)
        lines.append(row + f"  {weights[i]:>7.3f}" + ("   (absent)" if report.class_pixels[i] == 0 else ""))
    lines += ["", f"ignored pixels: {100 * report.ignore_pixels / max(report.total_pixels, 1):.3f}%"]
    for title, found in (("classes declared but never present", report.absent_classes),
                         ("masks all one class", [f"{i} ({n})" for i, n in report.single_class]),
                         ("image and label sizes differ", [i for i, *_ in report.size_mismatches]),
                         ("unreadable", [i for i, _ in report.unreadable]),
                         ("duplicate images", [" = ".join(group) for group in report.duplicates])):
        listed = ", ".join(found[:_LISTED]) + (" ..." if len(found) > _LISTED else "")
        lines.append(f"{title}: {len(found)}" + (f": {listed}" if found else ""))
    warnings = report.warnings()
    if warnings:
        lines += ["", "warnings:"] + [f"  - {w}" for w in warnings]
    lines += ["", "suggested class weights (median-frequency balancing over the training split): "
              + " ".join(f"{w:g}" for w in weights),
              "train with them: segzoo train ... --class_weights auto"]
    return "\n".join(lines)


def plot_class_frequency(report: DatasetReport, path) -> str:
    """Bar chart of each class's share of the labelled pixels and of the images holding it; absent classes in red."""
    from segzoo.plots import _pyplot, _save

    plt = _pyplot()
    names, positions = report.class_names, np.arange(report.num_classes)
    colors = [np.asarray(c) / 255.0 for c in report.colors]
    figure, axes = plt.subplots(1, 2, figsize=(11, 1.2 + 0.4 * len(names)), layout="constrained", sharey=True)
    for ax, values, title in ((axes[0], 100 * report.pixel_shares, "share of labelled pixels (%)"),
                              (axes[1], report.class_images, f"images holding the class (of {report.num_items})")):
        ax.barh(positions, values, color=colors, edgecolor="black", linewidth=0.5)
        for position, value, count in zip(positions, values, report.class_pixels):
            ax.text(value, position, " absent" if count == 0 else f" {value:.3g}", va="center",
                    color="red" if count == 0 else "black")
        ax.set(title=title)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, names)
    axes[0].invert_yaxis()
    figure.suptitle(f"{os.path.basename(report.source.rstrip('/')) or report.source}: class frequency")
    return _save(figure, path)


def plot_contact_sheet(report: DatasetReport, path, columns=4) -> str | None:
    """A grid of the sampled items' overlays, titled with their ids; ``None`` when there is none."""
    from segzoo.plots import _pyplot, _save

    if not report.samples:
        return None
    plt = _pyplot()
    rows = -(-len(report.samples) // columns)
    figure, axes = plt.subplots(rows, columns, squeeze=False, figsize=(3.2 * columns, 2.6 * rows),
                                layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (item_id, picture) in zip(axes.ravel(), report.samples):
        ax.imshow(picture)
        ax.set_title(item_id, fontsize=8)
    return _save(figure, path)


def write_report(report: DatasetReport, output_dir, overwrite=False) -> dict[str, str]:
    """Write ``report.json``, ``class_frequency.png`` and ``contact_sheet.png`` into ``output_dir``.

    An existing non-empty ``output_dir`` is refused unless ``overwrite``.
    Returns file name -> path of what was written.
    """
    from segzoo.files import check_output_folder

    output_dir = check_output_folder(output_dir, overwrite=overwrite)
    os.makedirs(output_dir, exist_ok=True)
    written = {REPORT_FILE: os.path.join(output_dir, REPORT_FILE)}
    write_json(written[REPORT_FILE], report.to_dict())
    written[CHART_FILE] = plot_class_frequency(report, os.path.join(output_dir, CHART_FILE))
    sheet = plot_contact_sheet(report, os.path.join(output_dir, CONTACT_SHEET_FILE))
    if sheet:
        written[CONTACT_SHEET_FILE] = sheet
    return written


def check_training_data(data, images=None, binary=False, data_dir=None, val_ratio=DEFAULT_VAL_RATIO, seed=0,
                        log=True) -> DatasetReport:
    """:func:`inspect` ``data`` as training starts (no contact sheet, no progress bar); log its warnings.

    The warnings are likely mistakes, not errors: training goes on.
    """
    report = inspect(data, images=images, binary=binary, data_dir=data_dir, val_ratio=val_ratio, seed=seed,
                     samples=0, progress=False)
    if log:
        for warning in report.warnings():
            logger.warning("%s: %s", data, warning)
    return report
