"""The cache of converted ImageNet trunks that ``from_name(..., weights="imagenet")`` reads.

DDRNet and PIDNet trunks are not in ``keras.applications``: their ImageNet
weights are the authors' PyTorch checkpoints, converted once by
:func:`segzoo.weights.install_imagenet_weights` (``segzoo convert ... --imagenet``,
or by itself after the download of :func:`segzoo.weights.load_imagenet_weights`) into ``$SEGZOO_WEIGHTS_DIR/<preset>_imagenet.weights.h5``
(default directory ``$KERAS_HOME/segzoo``, i.e. ``~/.keras/segzoo``). This
module only finds and loads those files, so the preset registry can use it
without importing the converters (which build models from the registry).
"""

import logging
import os

from segzoo.errors import option

logger = logging.getLogger("segzoo.weights")


def imagenet_weights_path(preset):
    """Where the converted ImageNet trunk of ``preset`` is looked for.

    ``$SEGZOO_WEIGHTS_DIR/<preset>_imagenet.weights.h5``; the directory defaults
    to ``$KERAS_HOME/segzoo`` (``~/.keras/segzoo``).
    """
    directory = os.environ.get("SEGZOO_WEIGHTS_DIR") or os.path.join(
        os.environ.get("KERAS_HOME", os.path.join("~", ".keras")), "segzoo")
    return os.path.join(os.path.expanduser(directory), f"{preset}_imagenet.weights.h5")


def load_imagenet_weights(backbone, preset, download_url=None, repository=None):
    """Load the converted ImageNet trunk of ``preset`` into ``backbone``.

    Args:
        backbone: the preset's trunk (a functional :class:`segzoo.backbones.Backbone`).
        preset: the preset name, which names the cached file.
        download_url: where the authors' checkpoint is, for the error message.
        repository: the authors' repository, for the error message.

    Raises:
        FileNotFoundError: the file is not there; the message says where to
            download the checkpoint and the command that converts it.
    """
    path = imagenet_weights_path(preset)
    if not os.path.isfile(path):
        url = download_url or repository or "the authors' repository"
        raise FileNotFoundError(
            f"No converted ImageNet weights for {preset} at {path}. Download the authors' ImageNet "
            f"checkpoint ({url}, linked from {repository}) and convert it once with\n"
            f"    segzoo convert <downloaded .pth> --preset {preset} --imagenet\n"
            f"(set SEGZOO_WEIGHTS_DIR to use another directory), or train from scratch with "
            f"{option('weights', 'none')}.")
    backbone.load_weights(path)
    logger.info("Loaded the %s ImageNet trunk from %s.", preset, path)
    return backbone
