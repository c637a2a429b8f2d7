"""ImageNet trunks of the DDRNet and PIDNet presets: downloaded, converted once, cached, loaded.

DDRNet and PIDNet trunks are not in ``keras.applications``: their ImageNet
weights are the authors' PyTorch checkpoints. A converted trunk is cached at
:func:`imagenet_weights_path`, ``$SEGZOO_WEIGHTS_DIR/<preset>_imagenet.weights.h5``
(default directory ``$KERAS_HOME/segzoo``, i.e. ``~/.keras/segzoo``), written
either here, the first time ``from_name(..., weights="imagenet")`` builds a preset
with a download (the family's ``IMAGENET_DOWNLOADS``: MMSegmentation's conversions
on OpenMMLab's server, checked against their published SHA-256), or by
:func:`segzoo.weights.install_imagenet_weights` (``segzoo convert ... --imagenet``)
for a file converted by hand. This module reads checkpoints through the family's
name map, never through the preset registry, so the registry can call it.
"""

import logging
import os

import keras

from segzoo.checkpoints import CheckpointError, read_state
from segzoo.errors import DownloadError, option
from segzoo.files import atomic_write, file_digest

logger = logging.getLogger("segzoo.weights")


def imagenet_weights_path(preset):
    """Where the converted ImageNet trunk of ``preset`` is looked for.

    ``$SEGZOO_WEIGHTS_DIR/<preset>_imagenet.weights.h5``; the directory defaults
    to ``$KERAS_HOME/segzoo`` (``~/.keras/segzoo``).
    """
    directory = os.environ.get("SEGZOO_WEIGHTS_DIR") or os.path.join(
        os.environ.get("KERAS_HOME", os.path.join("~", ".keras")), "segzoo")
    return os.path.join(os.path.expanduser(directory), f"{preset}_imagenet.weights.h5")


def save_imagenet_trunk(backbone, preset):
    """Write ``backbone``'s weights to :func:`imagenet_weights_path` (atomically); returns the path."""
    path = imagenet_weights_path(preset)
    with atomic_write(path) as temporary:
        backbone.save_weights(temporary)
    logger.info("Saved the %s ImageNet trunk to %s.", preset, path)
    return path


def imagenet_download_path(preset, url):
    """Where the ImageNet checkpoint of ``preset`` downloaded from ``url`` is kept: ``downloads/``
    beside :func:`imagenet_weights_path`, under its name on the server."""
    return os.path.join(os.path.dirname(imagenet_weights_path(preset)), "downloads", url.rsplit("/", 1)[-1])


def download_imagenet_checkpoint(preset, url, sha256):
    """Download ``url`` to :func:`imagenet_download_path` once and check its checksum.

    Through ``keras.utils.get_file``, with a progress bar; a file already there
    (put by hand, for instance) is not downloaded again, only checked.

    Args:
        preset: the preset it belongs to (for the path and messages).
        url: the file's address.
        sha256: its published SHA-256, whole or its first hex digits.

    Returns:
        The path of the checked file.

    Raises:
        DownloadError: the download failed (offline, for instance); the message
            says where to put the file by hand and how to train without it.
        CheckpointError: the file's checksum differs (the file is deleted).
    """
    path = imagenet_download_path(preset, url)
    os.makedirs(os.path.dirname(path), exist_ok=True)  # get_file falls back to /tmp for a missing one
    try:  # it returns where it put the file (in /tmp/.keras when the directory is not writable)
        path = keras.utils.get_file(os.path.basename(path), url, cache_dir=os.path.dirname(os.path.dirname(path)),
                                    cache_subdir="downloads")
    except Exception as error:  # get_file raises a bare Exception on URL failures.
        raise DownloadError(
            f"Could not download the {preset} ImageNet checkpoint from {url} ({error}). Without internet, "
            f"download it on another machine and put it at {path} (set SEGZOO_WEIGHTS_DIR to use another "
            f"directory), or train from scratch with {option('weights', 'none')}.") from error
    digest = file_digest(path)
    if not digest.startswith(sha256):
        os.remove(path)
        raise CheckpointError(
            f"{path}: SHA-256 {digest} is not the published {sha256} ({url}); the file was deleted. "
            f"Download it again, or train from scratch with {option('weights', 'none')}.")
    return path


def load_imagenet_weights(model, preset, family):
    """Load the ImageNet trunk of ``preset`` into ``model.backbone``, downloading it the first time.

    A cached trunk (:func:`imagenet_weights_path`) is loaded. Without one, a
    preset in ``family.IMAGENET_DOWNLOADS`` gets its checkpoint downloaded
    (:func:`download_imagenet_checkpoint`), copied into ``model`` by the family's
    name map (the heads keep their initialisation) and its trunk cached.

    Args:
        model: the preset's :class:`segzoo.models.SegmentationModel`, just built.
        preset: the preset name, which names the cached file.
        family: the family's checkpoint module (:mod:`segzoo.backbones.ddrnet_weights`
            or :mod:`segzoo.backbones.pidnet_weights`).

    Raises:
        FileNotFoundError: no cached trunk and no download; the message says where
            to get the authors' checkpoint and the command that converts it.
        DownloadError: the download failed; the message says where to put the file.
    """
    path = imagenet_weights_path(preset)
    if os.path.isfile(path):
        model.backbone.load_weights(path)
        logger.info("Loaded the %s ImageNet trunk from %s.", preset, path)
    elif preset in family.IMAGENET_DOWNLOADS:
        state, source = read_state(download_imagenet_checkpoint(preset, *family.IMAGENET_DOWNLOADS[preset]))
        family.load_official_weights(model, state, source)
        save_imagenet_trunk(model.backbone, preset)
    else:
        url = family.OFFICIAL_CHECKPOINTS.get(preset, {}).get("imagenet", family.REPOSITORY)
        raise FileNotFoundError(
            f"No converted ImageNet weights for {preset} at {path}. Download the authors' ImageNet "
            f"checkpoint ({url}, linked from {family.REPOSITORY}) and convert it once with\n"
            f"    segzoo convert <downloaded .pth> --preset {preset} --imagenet\n"
            f"(set SEGZOO_WEIGHTS_DIR to use another directory), or train from scratch with "
            f"{option('weights', 'none')}.")
    return model


__all__ = ["download_imagenet_checkpoint", "imagenet_download_path", "imagenet_weights_path",
           "load_imagenet_weights", "save_imagenet_trunk"]
