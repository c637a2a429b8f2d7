"""Train a segmentation model on your own data.

--data takes an rgb/ + gt/ folder (or a zip of one), a CVAT "Segmentation mask 1.1" export
(folder or .zip; add --images DIR when it was exported without images) or the
name of a built TFDS dataset (with --data_dir). Checkpoints go to
--checkpoint_dir: best.keras (best validation mean IoU), last.keras,
state.json, log.csv, TensorBoard logs and config.json (every setting of the run);
--resume continues an interrupted run with the settings it saved.

--config takes a recipe: a TOML, YAML or JSON file of these settings, or the name
of a recipe shipped with segzoo (camvid/ddrnet23_slim, ...). Flags typed on the
command line override the recipe, which overrides a resumed run's saved settings.

Examples:

    segzoo train --data export.zip --preset ddrnet23_slim --epochs 100 \\
        --batch_size 8 --image_size 480 640 --checkpoint_dir runs/holes
    segzoo train --data runs/holes_aug --loss binary_focal --weights none
    segzoo train --checkpoint_dir runs/holes --resume
    segzoo train --config camvid/ddrnet23_slim --data data/camvid --checkpoint_dir runs/camvid
    KERAS_BACKEND=jax segzoo train --distributed --data /shared/holes_aug \\
        --checkpoint_dir /shared/runs/holes   # every GPU of every machine: README, "Training on a cluster"
"""

import logging

from segzoo.cli.arguments import add_dataclass_arguments, given_fields
from segzoo.configs import TrainConfig
from segzoo.errors import ConfigError

logger = logging.getLogger(__name__)


def add_arguments(parser):
    """``--config`` and one flag per field of :class:`segzoo.configs.TrainConfig`."""
    parser.add_argument("--config", metavar="RECIPE",
                        help="a recipe: a .toml, .yaml or .json file of these settings, or a shipped recipe's name "
                             "(segzoo.recipes.list_recipes()); flags override it")
    add_dataclass_arguments(parser, TrainConfig, only_given=True)


def resolve_config(args):
    """The run's :class:`TrainConfig`: defaults < saved run (``--resume``) < ``--config`` recipe < typed flags."""
    from segzoo.recipes import read_recipe
    from segzoo.training import saved_settings

    typed = given_fields(TrainConfig, args)
    recipe = read_recipe(args.config) if args.config else {}
    settings = {}
    if typed.get("resume"):
        directory = typed.get("checkpoint_dir") or recipe.get("checkpoint_dir") or TrainConfig.checkpoint_dir
        settings.update(saved_settings(directory))
        if settings:
            logger.info("resume: the settings saved in %s", directory)
    if recipe:
        logger.info("recipe %s%s", args.config, "; flags typed override it" if typed else "")
    settings.update(recipe)
    settings.update(typed)
    if settings.get("data") is None:
        raise ConfigError("--data is required: a CVAT export, an rgb/ + gt/ folder or zip, or a TFDS name (with "
                          "--resume it comes from the saved run's config.json).")
    return TrainConfig(**settings)


def run(args):
    from segzoo.training import train

    config = resolve_config(args)
    _, history = train(config)
    best = max(history.get("val_mean_iou", [float("nan")]))
    print(f"best validation mean IoU this run: {best:.4f}; checkpoints in {config.checkpoint_dir}")
