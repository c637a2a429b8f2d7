"""Train a segmentation model on your own data.

--data takes an rgb/ + gt/ folder (or a zip of one), a CVAT "Segmentation mask 1.1" export
(folder or .zip; add --images DIR when it was exported without images) or the
name of a built TFDS dataset (with --data_dir). Checkpoints go to
--checkpoint_dir: best.keras (best validation mean IoU), last.keras,
state.json, log.csv and TensorBoard logs; --resume continues an interrupted run.

Examples:

    segzoo train --data export.zip --preset ddrnet23_slim --epochs 100 \\
        --batch_size 8 --image_size 480 640 --checkpoint_dir runs/holes
    segzoo train --data runs/holes_aug --loss binary_focal --weights none
    segzoo train --data export.zip --checkpoint_dir runs/holes --resume
    KERAS_BACKEND=jax segzoo train --distributed --data /shared/holes_aug \\
        --checkpoint_dir /shared/runs/holes   # every GPU of every machine: README, "Training on a cluster"
"""

from segzoo.cli.arguments import add_dataclass_arguments, dataclass_from_args
from segzoo.errors import ConfigError


def add_arguments(parser):
    """One flag per field of segzoo.training.TrainConfig."""
    from segzoo.training import TrainConfig

    add_dataclass_arguments(parser, TrainConfig)


def run(args):
    from segzoo.training import TrainConfig, train

    if args.data is None:
        raise ConfigError("--data is required: a CVAT export, an rgb/ + gt/ folder or zip, or a TFDS name.")
    config = dataclass_from_args(TrainConfig, args)
    _, history = train(config)
    best = max(history.get("val_mean_iou", [float("nan")]))
    print(f"best validation mean IoU this run: {best:.4f}; checkpoints in {config.checkpoint_dir}")
