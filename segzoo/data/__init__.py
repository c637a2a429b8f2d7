"""Data: CVAT import, offline augmentation, the TFDS builder and the tf.data pipeline.

Names load on first use (TensorFlow Datasets is slow to import)::

    from segzoo import data
    dataset = data.read_cvat("export.zip")
"""

import importlib

# public name -> module that defines it
_EXPORTS = {
    "DataError": "io", "read_image": "io", "read_label": "io", "read_color_mask": "io",
    "write_image": "io", "write_label": "io", "decode_image": "io", "decode_color_mask": "io",
    "SegmentationFolder": "folder", "FolderWriter": "folder", "source_id": "folder",
    "augmented_id": "folder", "check_label_values": "folder", "index_by_id": "folder",
    "read_cvat": "cvat", "CvatDataset": "cvat", "import_cvat": "cvat", "parse_labelmap": "cvat",
    "make_cvat_sample": "synthetic", "CvatSample": "synthetic",
    "AugmentConfig": "augment", "augment_dataset": "augment", "augment_pair": "augment",
    "copy_rng": "augment", "overlay_label": "overlay", "voc_palette": "overlay",
    "open_dataset": "sources", "prepare_source": "sources", "sample_images": "sources",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"segzoo.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'segzoo.data' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
