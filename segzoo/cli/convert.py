"""Convert an official DDRNet (github.com/ydhongHIT/DDRNet) or PIDNet (github.com/XuJiacong/PIDNet)
checkpoint to segzoo weights.

ImageNet trunk, cached where presets.from_name(..., weights="imagenet") looks (for
DDRNet-23-slim, DDRNet-23 and PIDNet that happens by itself on first use, from a download;
the authors' files and MMSegmentation's conversions are both read)::

    segzoo convert DDRNet39_imagenet.pth --preset ddrnet39 --imagenet
    segzoo convert PIDNet_S_ImageNet.pth.tar --preset pidnet_s --imagenet

A segmentation checkpoint (e.g. Cityscapes, 19 classes) to a .weights.h5 file::

    segzoo convert best_val_smaller.pth --preset ddrnet23_slim \\
        --output ddrnet23_slim_cityscapes.weights.h5
    segzoo convert PIDNet_S_Cityscapes_val.pt --preset pidnet_s --output pidnet_s_cityscapes.weights.h5

No PyTorch needed. See segzoo.weights for where to download each checkpoint.
"""

from segzoo.configs import CONVERTIBLE_PRESETS


def add_arguments(parser):
    parser.add_argument("checkpoint", help="the authors' .pth / .pt / .pth.tar file")
    parser.add_argument("--preset", required=True, choices=sorted(CONVERTIBLE_PRESETS))
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--imagenet", action="store_true",
                        help="an ImageNet checkpoint: save the trunk to the weights='imagenet' cache")
    target.add_argument("--output", help="a segmentation checkpoint: the .weights.h5 file to write")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="classes of the new model (default: those of the checkpoint)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --output if it exists (an output that is one of the inputs is always refused)")


def run(args):
    from segzoo import weights

    if args.imagenet:
        path = weights.install_imagenet_weights(args.checkpoint, args.preset)
    else:
        from segzoo.files import check_output_file

        path = args.output
        check_output_file(path, inputs=(args.checkpoint,), overwrite=args.overwrite)
        weights.convert(args.checkpoint, args.preset, num_classes=args.num_classes, output=path)
    print(f"Wrote {path}")
