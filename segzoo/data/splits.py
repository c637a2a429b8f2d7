"""Train / validation splits of an ``rgb/`` + ``gt/`` dataset, shared by the TFDS builder and ``load``.

Two sources of truth, in this order:

1. ``ImageSets/Segmentation/<subset>.txt`` lists (a CVAT export writes them):
   ``train`` -> ``train``; ``val``, ``valid`` or ``validation`` -> ``validation``; ``test``
   -> ``test`` (held out: never trained on, never used to pick a checkpoint; a
   benchmark's test set, scored with ``segzoo eval --split test``). A lone
   ``default`` list means CVAT had no subsets, so it carries no split and rule 2
   applies. Every item must then be covered: listed itself, or an augmented
   copy (``<id>_aug001``) whose source id is listed.
2. Otherwise a seeded split by ``val_ratio`` over *source* ids
   (:func:`segzoo.data.folder.source_id`): a source goes to validation when its
   SHA-256 rank, salted with ``seed``, is among the lowest
   ``round(val_ratio * number of sources)``. The rank of one source does not
   depend on the others, so adding images leaves old assignments mostly in
   place, and nothing depends on numpy's random streams.

In both cases all copies of one source go to the same side, and the validation
(and test) split keeps only originals (items whose id is their own source id): augmented
copies of a validation source are left out of both splits and counted in
:attr:`Split.excluded`, since scoring a model on synthetic variants of one image
would overweight that image, and training on them would leak it.
"""

from __future__ import annotations

import dataclasses
import hashlib

from segzoo.data.folder import SUBSETS_DIR, source_id
from segzoo.data.io import DataError

TRAIN = "train"
VALIDATION = "validation"
TEST = "test"
#: Every item of a dataset, whatever its split (held-out sets, scoring).
ALL = "all"
DEFAULT_VAL_RATIO = 0.1

#: CVAT subset name -> split name.
SUBSET_TO_SPLIT = {"train": TRAIN, "val": VALIDATION, "valid": VALIDATION, "validation": VALIDATION, "test": TEST}


@dataclasses.dataclass(frozen=True)
class Split:
    """The ids of each split.

    Attributes:
        train: ids of the training split, sorted.
        validation: ids of the validation split (originals only), sorted.
        excluded: augmented copies of validation and test sources, in no split.
        method: ``"image_sets"`` (from the lists) or ``"ratio"`` (seeded).
        test: ids of the held-out test split (originals only, from a ``test`` list), sorted.
    """

    train: list[str]
    validation: list[str]
    excluded: list[str]
    method: str
    test: list[str] = dataclasses.field(default_factory=list)

    def ids(self, split: str) -> list[str]:
        """The ids of ``split`` (``"train"``, ``"validation"`` or ``"test"``)."""
        if split not in (TRAIN, VALIDATION, TEST):
            raise ValueError(f"Unknown split {split!r}: expected '{TRAIN}', '{VALIDATION}' or '{TEST}'.")
        return {TRAIN: self.train, VALIDATION: self.validation, TEST: self.test}[split]

    def sizes(self) -> dict[str, int]:
        """Split name -> number of items (``"test"`` only when there is one)."""
        sizes = {TRAIN: len(self.train), VALIDATION: len(self.validation)}
        return {**sizes, TEST: len(self.test)} if self.test else sizes


def split_ids(ids, subsets=None, val_ratio=DEFAULT_VAL_RATIO, seed=0, where="dataset") -> Split:
    """Split item ids into train and validation (see the module docstring).

    Args:
        ids: every item id of the dataset.
        subsets: subset name -> ids, from ``ImageSets/Segmentation`` (or empty).
        val_ratio: fraction of source ids for validation, in ``(0, 1)``; only
            used without subset lists.
        seed: integer salt of the ratio split.
        where: the dataset, named in error messages.

    Raises:
        DataError: naming the problem and the fix when a subset name is unknown,
            one source is listed in both splits, an item is in no list, or the
            ratio split cannot leave an item on each side.
    """
    ids = sorted(set(ids))
    sources = sorted({source_id(i) for i in ids})
    subsets = {name: list(items) for name, items in (subsets or {}).items()}
    if set(subsets) - {"default"}:
        side = _sides_from_subsets(ids, subsets, where)
        method = "image_sets"
    else:
        side = _sides_by_ratio(sources, val_ratio, seed, where)
        method = "ratio"
    train = [i for i in ids if side[source_id(i)] == TRAIN]
    validation = [i for i in ids if side[source_id(i)] == VALIDATION and source_id(i) == i]
    test = [i for i in ids if side[source_id(i)] == TEST and source_id(i) == i]
    excluded = [i for i in ids if side[source_id(i)] != TRAIN and source_id(i) != i]
    return Split(train=train, validation=validation, excluded=excluded, method=method, test=test)


def _sides_from_subsets(ids, subsets, where):
    lists = f"{where}/{SUBSETS_DIR}"
    unknown = sorted(set(subsets) - set(SUBSET_TO_SPLIT))
    if unknown:
        raise DataError(
            f"{lists}: subset(s) {', '.join(unknown)} have no split. Known subsets: "
            f"{', '.join(SUBSET_TO_SPLIT)} (a lone 'default' means no split). Rename them "
            f"in CVAT, or delete the lists to split by val_ratio."
        )
    side = {}
    for name, listed in sorted(subsets.items()):
        for item_id in listed:
            source = source_id(item_id)
            if side.setdefault(source, SUBSET_TO_SPLIT[name]) != SUBSET_TO_SPLIT[name]:
                raise DataError(
                    f"{lists}: the source image '{source}' is listed in both {side[source]} and "
                    f"{SUBSET_TO_SPLIT[name]} (via '{item_id}' in {name}.txt). Keep each source and its "
                    f"copies on one side."
                )
    unlisted = [i for i in ids if source_id(i) not in side]
    if unlisted:
        raise DataError(
            f"{lists}: {len(unlisted)} item(s) are in no subset list, e.g. "
            f"{', '.join(unlisted[:5])}. Add them (or their source ids) to train.txt, val.txt or test.txt, "
            f"or delete the lists to split by val_ratio."
        )
    return side


def _rank(source: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\0{source}".encode("utf-8")).hexdigest()


def _sides_by_ratio(sources, val_ratio, seed, where):
    if not 0.0 < val_ratio < 1.0:
        raise DataError(f"{where}: val_ratio must be between 0 and 1 (exclusive), got {val_ratio}.")
    num_validation = max(1, round(val_ratio * len(sources)))
    if num_validation >= len(sources):
        raise DataError(
            f"{where}: {len(sources)} source image(s) cannot be split with val_ratio={val_ratio}: "
            f"each split needs at least one. Add images or lower val_ratio."
        )
    validation = set(sorted(sources, key=lambda s: _rank(s, int(seed)))[:num_validation])
    return {s: VALIDATION if s in validation else TRAIN for s in sources}
