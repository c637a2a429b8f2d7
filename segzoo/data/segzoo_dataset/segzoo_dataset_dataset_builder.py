"""``tfds build`` entry point: builds the dataset ``segzoo_dataset`` from ``--manual_dir``.

TFDS finds this module by its folder name and takes the dataset name from it.
The split is set by the environment: ``SEGZOO_VAL_RATIO`` (default 0.1) and
``SEGZOO_SPLIT_SEED`` (default 0). To build under another name from the
command line, copy this folder to ``<name>/<name>_dataset_builder.py``; from
Python, use :func:`segzoo.data.build_dataset`.
"""

import os

from segzoo.data.splits import DEFAULT_VAL_RATIO
from segzoo.data.tfds_builder import SegmentationFolderBuilder


class Builder(SegmentationFolderBuilder):
    """The ``rgb/`` + ``gt/`` folder (or one zip of it) in the manual directory."""

    def __init__(self, **kwargs):
        super().__init__(
            val_ratio=float(os.environ.get("SEGZOO_VAL_RATIO", DEFAULT_VAL_RATIO)),
            seed=int(os.environ.get("SEGZOO_SPLIT_SEED", "0")),
            **kwargs,
        )
