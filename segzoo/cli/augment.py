"""Offline augmentation: write a dataset and N augmented copies of every image.

Reads an rgb/ + gt/ folder (or a CVAT "Segmentation mask 1.1" export, folder or
zip, with --images for an export saved without images) and writes an rgb/ + gt/
folder with every original, its copies <id>_aug001 ... in the same subset, and
overlays/<id>.jpg colour overlays for checking by eye (never read for training).

Each copy applies a random subset of the operations below, each with its own
probability; the same --seed gives byte-identical output whatever --workers.

Example:

    segzoo augment --source data/holes --output data/holes_aug \\
        --copies 9 --rotation_prob 0.5 --rotation_degrees 10 45 \\
        --bg_path data/backgrounds --background_prob 0.3
"""

from segzoo.cli.arguments import add_dataclass_arguments, dataclass_from_args


def add_arguments(parser):
    """Paths and run options, then one flag per AugmentConfig field."""
    from segzoo.data.augment import AugmentConfig

    parser.add_argument("--source", "--data", dest="source", required=True,
                        help="rgb/ + gt/ folder (with classes.json) or a zip of one, or a CVAT export folder or zip "
                             "(--data, as train takes it, is the same flag)")
    parser.add_argument("--images", default=None,
                        help="CVAT export saved without images: the folder of the original images")
    parser.add_argument("--output", required=True, help="output folder; must be empty or absent")
    parser.add_argument("--bg_path", default=None,
                        help="folder of background images for --background_prob (required by it)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: every core); does not change the output")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty output folder: everything in it is deleted once the new "
                             "dataset is complete (until then it stays as it was)")
    parser.add_argument("--format", choices=("png", "jpg"), default="png",
                        help="image format of rgb/ (labels are always PNG) (default: png)")
    add_dataclass_arguments(parser, AugmentConfig, "augmentation (segzoo.data.AugmentConfig)")


def run(args):
    from segzoo.data.augment import AugmentConfig, augment_dataset
    from segzoo.data.sources import open_dataset

    config = dataclass_from_args(AugmentConfig, args)
    with open_dataset(args.source, images=args.images) as dataset:
        augment_dataset(dataset, args.output, config, bg_path=args.bg_path, workers=args.workers,
                        overwrite=args.overwrite, image_format=f".{args.format}")
        originals = len(dataset.ids)
    print(f"wrote {args.output}: {originals} images and {originals * config.copies} augmented copies "
          f"({config.copies} each); overlays/ shows them for checking by eye")
