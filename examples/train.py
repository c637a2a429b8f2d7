"""Train a segmentation model on your own data.

--data takes an rgb/ + gt/ folder (or a zip of one), a CVAT "Segmentation mask 1.1" export
(folder or .zip; add --images DIR when it was exported without images) or the
name of a built TFDS dataset (with --data_dir). Checkpoints go to
--checkpoint_dir: best.keras (best validation mean IoU), last.keras,
state.json, log.csv and TensorBoard logs; --resume continues an interrupted run.

Examples:

    python examples/train.py --data export.zip --preset ddrnet23_slim --epochs 100 \\
        --batch_size 8 --image_size 480 640 --checkpoint_dir runs/holes
    python examples/train.py --data runs/holes_aug --loss binary_focal --weights none
    python examples/train.py --data export.zip --checkpoint_dir runs/holes --resume
    KERAS_BACKEND=jax python examples/train.py --distributed --data /shared/holes_aug \
        --checkpoint_dir /shared/runs/holes   # every GPU of every machine: README, "Training on a cluster"
"""

import argparse

from segzoo.cli import add_dataclass_arguments, dataclass_from_args, setup_logging
from segzoo.training import TrainConfig, train


def build_parser():
    """One flag per field of segzoo.training.TrainConfig."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_dataclass_arguments(parser, TrainConfig)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data is None:
        parser.error("--data is required")
    setup_logging()
    config = dataclass_from_args(TrainConfig, args)
    _, history = train(config)
    best = max(history.get("val_mean_iou", [float("nan")]))
    print(f"best validation mean IoU this run: {best:.4f}; checkpoints in {config.checkpoint_dir}")


if __name__ == "__main__":
    main()
