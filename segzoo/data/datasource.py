"""A dataset opened once: its classes, its splits and a reader, for training and evaluation.

:func:`open_source` resolves what ``--data`` names once: an ``rgb/`` + ``gt/``
folder, a zip of one, a folder holding one such zip (see
:func:`segzoo.data.sources.open_dataset`), or the name of a dataset built by
:func:`segzoo.data.build_dataset` in a TFDS data directory. The
:class:`DataSource` it returns is what :func:`segzoo.data.load`,
:func:`load_info` and :func:`scan_labels` (the check of every label before
training) read, so that a run opens, lists and splits its data one time,
however many pipelines it builds. A CVAT export is imported first
(:func:`segzoo.data.prepare_source`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os

import numpy as np

from segzoo.data.io import DataError
from segzoo.errors import option
from segzoo.data.sources import open_dataset
from segzoo.data.splits import ALL, DEFAULT_VAL_RATIO, TEST, TRAIN, VALIDATION, split_ids

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What training needs to know about a dataset.

    Attributes:
        class_names: class names, index = class id.
        colors: ``(r, g, b)`` per class.
        ignore_index: label value of ignored pixels.
        split_sizes: split name -> number of items.
        split_method: ``"image_sets"`` or ``"ratio"`` (see :mod:`segzoo.data.splits`).
        source: the folder or zip, or the TFDS dataset directory.
    """

    class_names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_index: int
    split_sizes: dict
    split_method: str
    source: str

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.class_names)


def is_path(source) -> bool:
    """Whether ``source`` names a file or folder (or a zip, existing or not) rather than a TFDS dataset."""
    return not isinstance(source, str) or os.path.exists(source) or source.lower().endswith(".zip")


def tfds_builder(name, data_dir=None):
    """The TFDS builder of a dataset built by :func:`segzoo.data.build_dataset`, with a clear error if there is none."""
    import tensorflow_datasets as tfds  # slow to import: only for TFDS sources

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise DataError(
            f"'{name}' is neither an existing folder or zip nor a TFDS dataset built in "
            f"{data_dir or 'the default TFDS data directory'} ({error}). Build it with "
            f"segzoo.data.build_dataset, or pass the folder's path."
        ) from error
    if "class_names" not in builder.info.metadata:
        raise DataError(
            f"{builder.data_path}: this TFDS dataset has no class_names in its metadata; "
            f"build it with segzoo.data.build_dataset."
        )
    return builder


class DataSource:
    """A dataset opened once (see the module docstring); made by :func:`open_source`.

    Close it when done, or use ``with``: a zip stays open while batches are read.

    Attributes:
        name: the path or TFDS name it was opened from.
        info: its :class:`DataInfo`.
        reader: the folder or zip reader (:func:`segzoo.data.sources.open_dataset`); ``None`` for TFDS.
        builder: the TFDS builder; ``None`` for a folder or zip.
        data_dir, val_ratio, label_values: what it was opened with (see :func:`open_source`).
    """

    def __init__(self, name, info, *, reader=None, builder=None, split=None, data_dir=None,
                 val_ratio=DEFAULT_VAL_RATIO, label_values=None):
        self.name, self.info, self.reader, self.builder = name, info, reader, builder
        self.data_dir, self.val_ratio, self.label_values = data_dir, val_ratio, label_values
        self._split = split

    def ids(self, split) -> list[str]:
        """Item ids of ``split`` (``"train"``, ``"validation"``, ``"test"`` or ``"all"``) of a folder or zip."""
        if self.reader is None:
            raise ValueError(f"{self.name} is a TFDS dataset: its splits are read with its builder, not by id.")
        if split not in (TRAIN, VALIDATION, TEST, ALL):
            raise ValueError(f"A folder source has the splits '{TRAIN}', '{VALIDATION}', '{TEST}' (from a "
                             f"test list) and '{ALL}', not {split!r}.")
        return list(self.reader.ids) if split == ALL else self._split.ids(split)

    def label_counts(self, split, workers=8) -> dict[str, np.ndarray]:
        """Pixel count of each stored label value, int64 ``(256,)``, of every label of ``split``.

        Keyed by what names the label in an error: its file (folder, zip) or
        ``"<dataset>:<split> id <id>"`` (TFDS; an absent split is empty).
        Folder labels are read by ``workers`` threads.
        """
        def count(label):
            return np.bincount(label.ravel(), minlength=256).astype(np.int64)

        if self.builder is not None:
            return self._tfds_label_counts(split, count)
        reader = self.reader
        with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
            ids = self.ids(split)
            return dict(zip((reader.label_path(i) for i in ids),
                            pool.map(lambda i: count(reader.read_label(i)), ids)))

    def _tfds_label_counts(self, split, count):
        import tensorflow_datasets as tfds

        if split not in self.builder.info.splits:
            return {}
        examples = self.builder.as_dataset(split=split, shuffle_files=False,
                                           decoders={"image": tfds.decode.SkipDecoding()})
        return {f"{self.builder.name}:{split} id {example['id'].decode('utf-8')}": count(example["label"][..., 0])
                for example in tfds.as_numpy(examples)}

    def close(self):
        """Close the reader (a zip stays open until then)."""
        if self.reader is not None:
            self.reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __str__(self):
        return os.fspath(self.name)


def open_source(source, data_dir=None, val_ratio=None, seed=0, label_values=None) -> DataSource:
    """Open ``source`` once for :func:`segzoo.data.load` and :func:`segzoo.data.scan_labels`.

    Args:
        source: an ``rgb/`` + ``gt/`` folder, a zip of one or a folder holding
            one such zip, or the name of a dataset built by
            :func:`segzoo.data.build_dataset`. A :class:`DataSource` is returned
            as it is, provided the other arguments are its own or ``None``.
        data_dir: TFDS data directory of a TFDS name.
        val_ratio: validation fraction when a folder has no split lists (see
            :mod:`segzoo.data.splits`); ``None``: the default, 0.1.
        seed: seed of that split.
        label_values: a folder source's stored label value of each class, in
            order (``(0, 255)`` reads 0/255 masks as ids 0/1); ``None``: stored
            values are class ids.

    Raises:
        DataError: a path that is no rgb/ + gt/ dataset (a CVAT export names
            the import that converts it), or a name that is no built TFDS dataset.
        ValueError: a :class:`DataSource` with other opening arguments.
    """
    label_values = tuple(label_values) if label_values else None
    if isinstance(source, DataSource):
        given = {"data_dir": data_dir, "val_ratio": val_ratio, "label_values": label_values}
        differ = [f"{name}={value!r} (opened with {getattr(source, name)!r})" for name, value in given.items()
                  if value is not None and value != getattr(source, name)]
        if differ:
            raise ValueError(f"{source.name} is already open; {', '.join(differ)} apply when it is opened: "
                             f"pass them to open_source.")
        return source
    val_ratio = DEFAULT_VAL_RATIO if val_ratio is None else val_ratio
    options = dict(data_dir=data_dir, val_ratio=val_ratio, label_values=label_values)
    if is_path(source):
        reader = open_dataset(source, cvat=False, label_values=label_values)
        try:
            split = split_ids(reader.ids, reader.subsets(), val_ratio, seed, where=reader.root)
        except BaseException:
            reader.close()
            raise
        info = DataInfo(tuple(reader.class_names), tuple(reader.colors), reader.ignore_index,
                        split.sizes(), split.method, reader.root)
        return DataSource(os.fspath(source), info, reader=reader, split=split, **options)
    builder = tfds_builder(source, data_dir)
    meta = builder.info.metadata
    info = DataInfo(tuple(meta["class_names"]), tuple(tuple(c) for c in meta["colors"]), int(meta["ignore_index"]),
                    {name: split.num_examples for name, split in builder.info.splits.items()},
                    meta["split_method"], os.fspath(builder.data_path))
    return DataSource(source, info, builder=builder, **options)


def split_description(source: DataSource, split: str) -> str:
    """One line for a person on what ``split`` of ``source`` holds: how many images, and for a seeded ratio
    split (a dataset without split lists) that it is the share training holds out, and how to take all."""
    sizes = source.info.split_sizes
    total = len(source.ids(ALL)) if source.reader is not None else sum(sizes.values())
    count = total if split == ALL else sizes.get(split, 0)
    line = f"{count} images: split '{split}' of {source.name}"
    if split in (TRAIN, VALIDATION) and source.info.split_method == "ratio":
        ratio = source.val_ratio if source.builder is None else source.builder.info.metadata["val_ratio"]
        line += (f" (no split lists: the seeded share that training holds out for validation, "
                 f"{option('val_ratio', ratio)}, or the rest; {option('split', ALL)} takes all {total})")
    return line


def load_info(source, data_dir=None, val_ratio=None, seed=0, label_values=None) -> DataInfo:
    """Class names, colours, ``ignore_index`` and split sizes of a dataset (arguments as :func:`open_source`)."""
    if isinstance(source, DataSource):
        return open_source(source, data_dir, val_ratio, seed, label_values).info
    with open_source(source, data_dir, val_ratio, seed, label_values) as opened:
        return opened.info


def _listed(files, limit=5):
    return ", ".join(files[:limit]) + (f" and {len(files) - limit} more" if len(files) > limit else "")


def scan_labels(source, val_ratio=None, seed=0, label_values=None, num_classes=None, workers=8,
                data_dir=None) -> dict:
    """Read every training and validation label once, before training, and catch labels that cannot be right.

    Args:
        source: a :class:`DataSource`, or what :func:`open_source` opens (a
            folder, a zip or a built TFDS dataset), with ``val_ratio``,
            ``seed``, ``label_values`` and ``data_dir`` as it takes them.
        num_classes: label values must be below it (or ``ignore_index``);
            ``None``: the dataset's classes.
        workers: threads reading the labels of a folder or zip.

    Returns:
        ``{split: pixel count of each stored value, int64 (256,)}`` for ``"train"`` and ``"validation"``.

    Raises:
        DataError: naming the files (a TFDS dataset: split and id) and counts,
            for a dataset of a single class; for masks stored as 0/255 (255 is
            the ignore value: every foreground pixel would be ignored), with
            the fix; for a split in which every pixel is ignored; for values
            that are no class id. A class that never appears in a split is
            logged as a warning.
    """
    opened = open_source(source, data_dir=data_dir, val_ratio=val_ratio, seed=seed, label_values=label_values)
    try:
        info = opened.info
        where, names, ignore = info.source, list(info.class_names), info.ignore_index
        if len(names) < 2:
            raise DataError(f"{where}: a single class ({names[0]!r}), so there is nothing to segment. A binary "
                            f"dataset has two classes, background and the object (class_names "
                            f'["background", "object"]); a CVAT task needs a label besides background.')
        counts = {name: opened.label_counts(name, workers) for name in (TRAIN, VALIDATION)}
    finally:
        if opened is not source:
            opened.close()
    num_classes = len(names) if num_classes is None else max(int(num_classes), 2)
    totals = {name: sum(per_label.values(), np.zeros(256, np.int64)) for name, per_label in counts.items()}
    overall = totals[TRAIN] + totals[VALIDATION]
    seen = {int(v) for v in np.flatnonzero(overall)}
    if opened.label_values is None and ignore in seen and seen <= {0, ignore}:
        raise DataError(
            f"{where}: every label holds only the values 0 and {ignore}, and {ignore} means ignore: these look "
            f"like binary masks stored as 0/{ignore}, so every foreground pixel ({overall[ignore]} of "
            f"{overall.sum()}) would be ignored. Pass {option('label_values')} 0 {ignore} to read {ignore} as "
            f"class 1, or store the masks as 0/1.")
    for split_name, total in totals.items():
        if total.sum() and total[ignore] == total.sum():
            raise DataError(f"{where}: in the {split_name} split, every pixel of the {len(counts[split_name])} "
                            f"labels is {ignore} (ignore), so there is nothing to learn or to score. Check the "
                            f"masks (e.g. {_listed(list(counts[split_name]), 3)}).")
    bad = {}
    for per_label in counts.values():
        for label, label_counts in per_label.items():
            values = [(v, int(label_counts[v])) for v in np.flatnonzero(label_counts)
                      if v >= num_classes and v != ignore]
            if values:
                bad[label] = values
    if bad:
        files = [f"{label} ({', '.join(f'value {v}: {c} pixels' for v, c in values[:3])})"
                 for label, values in sorted(bad.items())]
        raise DataError(f"{where}: {len(bad)} label(s) hold values that are not class ids: there are "
                        f"{num_classes} classes (0..{num_classes - 1}) and {ignore} means ignore: "
                        f"{_listed(files)}. Fix these masks, or the class list in {where}.")
    for split_name, total in totals.items():
        missing = [names[c] for c in range(len(names)) if total[c] == 0]
        if missing and counts[split_name]:
            logger.warning("%s: class(es) %s never appear in the %s split (%d labels).", where,
                           ", ".join(repr(m) for m in missing), split_name, len(counts[split_name]))
    return totals
