"""Data: CVAT import, image + mask folder import, offline augmentation, the TFDS builder and the tf.data pipeline.

Names load on first use (TensorFlow Datasets is slow to import)::

    from segzoo import data
    dataset = data.read_cvat("export.zip")
    data.import_pairs("CamVid", "CamVid", "data/camvid", names, ignore_values=[11])  # to an rgb/ + gt/ folder
    report = data.inspect("export.zip")                 # statistics and likely mistakes, before training
    batches = data.load("path/to/rgb_gt_folder", split="train", image_size=(480, 640),
                        augment=data.OnlineAugment())
    with data.open_source("path/to/rgb_gt_folder") as source:  # opened and split once, for several pipelines
        train, validation = data.load(source, "train"), data.load(source, "validation")
"""

import importlib

# public name -> module that defines it
_EXPORTS = {
    "DataError": "io", "read_image": "io", "read_label": "io", "read_color_mask": "io",
    "write_image": "io", "write_label": "io", "decode_image": "io", "decode_color_mask": "io",
    "decode_label": "io", "decode_mask": "io", "open_zip": "io", "FolderFiles": "io", "ZipFiles": "io",
    "SegmentationDataset": "folder", "SegmentationFolder": "folder", "SegmentationZip": "folder",
    "FolderWriter": "folder", "source_id": "folder", "augmented_id": "folder",
    "check_label_values": "folder", "index_by_id": "folder",
    "read_cvat": "cvat", "CvatDataset": "cvat", "import_cvat": "cvat", "parse_labelmap": "cvat",
    "import_pairs": "pairs", "ImportSummary": "pairs",
    "make_cvat_sample": "synthetic", "CvatSample": "synthetic",
    "AugmentConfig": "augment", "augment_dataset": "augment", "augment_pair": "augment",
    "copy_rng": "augment", "overlay_label": "overlay", "voc_palette": "overlay",
    "open_dataset": "sources", "prepare_source": "sources", "sample_images": "sources",
    "draw_images": "sources", "resize_images": "sources",
    "data_fingerprint": "sources", "scan_labels": "datasource",
    "Split": "splits", "split_ids": "splits",
    "build_dataset": "tfds_builder",
    "inspect": "inspection", "DatasetReport": "inspection", "median_frequency_weights": "inspection",
    "check_training_data": "inspection",
    "CvatWriter": "cvat_writer", "write_cvat_zip": "cvat_writer",
    "load": "pipeline", "load_info": "datasource", "OnlineAugment": "online_augment", "augment_element": "online_augment",
    "DataInfo": "datasource", "DataSource": "datasource", "open_source": "datasource",
    "split_description": "datasource",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"segzoo.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'segzoo.data' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
