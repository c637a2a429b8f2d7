"""Tests of segzoo.data.splits: one split rule for the TFDS builder and the pipeline."""

import pytest

from segzoo.data.folder import source_id
from segzoo.data.io import DataError
from segzoo.data.splits import split_ids


def _ids(num_sources, copies):
    return [f"s{i:02d}" + suffix for i in range(num_sources)
            for suffix in [""] + [f"_aug{k:03d}" for k in range(1, copies + 1)]]


def test_ratio_split_keeps_copies_with_their_source_and_validation_has_originals_only():
    ids = _ids(20, 2)
    split = split_ids(ids, val_ratio=0.2, seed=0)
    assert split.method == "ratio"
    validation_sources = {source_id(i) for i in split.validation}
    assert len(validation_sources) == 4
    assert all(source_id(i) == i for i in split.validation)
    assert not validation_sources & {source_id(i) for i in split.train}
    assert sorted(split.excluded) == sorted(i for i in ids if i != source_id(i) and source_id(i) in validation_sources)
    assert sorted(split.train + split.validation + split.excluded) == sorted(ids)


def test_ratio_split_depends_on_the_seed_only():
    ids = _ids(20, 1)
    assert split_ids(ids, seed=3) == split_ids(list(reversed(ids)), seed=3)
    assert split_ids(ids, seed=3).validation != split_ids(ids, seed=4).validation


def test_subset_lists_decide_and_copies_follow_their_source():
    ids = _ids(4, 1)
    split = split_ids(ids, {"train": ["s00", "s01", "s02"], "val": ["s03"]}, val_ratio=0.5)
    assert split.method == "image_sets"
    assert split.train == ["s00", "s00_aug001", "s01", "s01_aug001", "s02", "s02_aug001"]
    assert split.validation == ["s03"] and split.excluded == ["s03_aug001"]


def test_a_lone_default_subset_means_a_ratio_split():
    ids = _ids(10, 0)
    assert split_ids(ids, {"default": ids}, val_ratio=0.2, seed=1) == split_ids(ids, val_ratio=0.2, seed=1)


@pytest.mark.parametrize("subsets, message", [
    ({"train": ["s00"], "val": ["s00_aug001"]}, "both train and validation"),
    ({"train": ["s00"], "holdout": ["s01"]}, "holdout"),
    ({"val": ["s00"], "test": ["s00_aug001", "s01"]}, "both test and validation"),
    ({"train": ["s00"]}, "in no subset list"),
])
def test_bad_subset_lists_are_named(subsets, message):
    with pytest.raises(DataError, match=message):
        split_ids(_ids(2, 1), subsets, where="/data/set")


def test_a_test_list_holds_out_originals_that_no_other_split_sees():
    ids = _ids(4, 1)  # s00 s00_aug001 s01 ...
    split = split_ids(ids, {"train": ["s00", "s01"], "val": ["s02"], "test": ["s03"]})
    assert split.test == ["s03"] and split.ids("test") == ["s03"] and "s03_aug001" in split.excluded
    assert not {"s03", "s03_aug001"} & set(split.train + split.validation)
    assert split.sizes() == {"train": 4, "validation": 1, "test": 1}
    assert "test" not in split_ids(ids, {"train": ["s00", "s01", "s02"], "val": ["s03"]}).sizes()


def test_a_ratio_that_leaves_a_side_empty_is_refused():
    with pytest.raises(DataError, match="at least one"):
        split_ids(["a", "b"], val_ratio=0.9)
    with pytest.raises(DataError, match="val_ratio"):
        split_ids(["a", "b"], val_ratio=0.0)
