"""Official checkpoints into segzoo models: DDRNet's and PIDNet's PyTorch files, read without PyTorch.

The pieces live where they belong; this module is the entry point that joins them:

- reading ``.pth`` files safely (no PyTorch, no code from the file runs) and
  applying a name map: :mod:`segzoo.checkpoints`, shared by every family;
- each family's name map and download pages, beside its backbone:
  :mod:`segzoo.backbones.ddrnet_weights` (github.com/ydhongHIT/DDRNet),
  :mod:`segzoo.backbones.pidnet_weights` (github.com/XuJiacong/PIDNet);
- the cache of converted ImageNet trunks that ``from_name(..., weights="imagenet")``
  reads, and the downloads that fill it: :mod:`segzoo.backbones.pretrained`.

This module imports the preset registry (a conversion builds the preset's
model); the registry imports none of this module, so there is no import cycle.

One command converts a checkpoint of either family (``examples/convert_ddrnet.py``)::

    # ImageNet trunk, cached for presets.from_name(..., weights="imagenet"):
    python examples/convert_ddrnet.py DDRNet23s_imagenet.pth --preset ddrnet23_slim --imagenet
    python examples/convert_ddrnet.py PIDNet_S_ImageNet.pth.tar --preset pidnet_s --imagenet
    # Cityscapes model, 19 classes, to a .weights.h5 file:
    python examples/convert_ddrnet.py best_val_smaller.pth --preset ddrnet23_slim \\
        --output ddrnet23_slim_cityscapes.weights.h5
    python examples/convert_ddrnet.py PIDNet_S_Cityscapes_val.pt --preset pidnet_s \\
        --output pidnet_s_cityscapes.weights.h5

Converted ImageNet trunks live in :func:`imagenet_weights_path`:
``$SEGZOO_WEIGHTS_DIR/<preset>_imagenet.weights.h5``, by default
``$KERAS_HOME/segzoo/`` (``~/.keras/segzoo/``). For DDRNet-23-slim, DDRNet-23 and
PIDNet-S/M/L, ``presets.from_name(..., weights="imagenet")`` fills that cache itself
the first time: it downloads MMSegmentation's conversion of the authors' ImageNet
file (``IMAGENET_DOWNLOADS`` of each family's module, checked against its published
SHA-256) into ``downloads/`` beside it and converts it
(:mod:`segzoo.backbones.pretrained`), as ``keras.applications`` downloads
EfficientNet's weights. DDRNet-39's file is only on the authors' Drive: convert it by hand.
"""

import logging
import os

from segzoo import presets
from segzoo.backbones import ddrnet_weights, pidnet_weights
from segzoo.backbones.ddrnet import DDRNET_VARIANTS, DDRNetBackbone
from segzoo.backbones.pidnet import PIDNET_VARIANTS, PIDNetBackbone
from segzoo.backbones.pretrained import imagenet_weights_path, save_imagenet_trunk
from segzoo.checkpoints import CheckpointError, load_torch_checkpoint, read_state
from segzoo.checkpoints.mapping import num_classes_of
from segzoo.files import atomic_write

logger = logging.getLogger("segzoo.weights")

#: Download pages of the authors' checkpoints, by preset (both families).
OFFICIAL_CHECKPOINTS = {**ddrnet_weights.OFFICIAL_CHECKPOINTS, **pidnet_weights.OFFICIAL_CHECKPOINTS}

#: Preset -> the module with its family's name map.
_FAMILIES = {**{name: ddrnet_weights for name in DDRNET_VARIANTS},
             **{name: pidnet_weights for name in PIDNET_VARIANTS}}


def _family_of_model(model):
    if isinstance(model.backbone, DDRNetBackbone):
        return ddrnet_weights
    if isinstance(model.backbone, PIDNetBackbone):
        return pidnet_weights
    raise TypeError(f"{model.name}: no official checkpoints are known for a {type(model.backbone).__name__}.")


def load_official_weights(model, state, source="checkpoint"):
    """Copy an official state dict into a DDRNet or PIDNet ``model``; nothing is assigned unless all fits.

    Args:
        model: a :class:`segzoo.models.SegmentationModel` of a ``ddrnet*`` or ``pidnet_*`` preset.
        state: ``{official key: numpy array}``, prefixes already removed.
        source: how to name the checkpoint in messages.

    Raises:
        CheckpointError: listing the missing, unexpected and mis-shaped keys.
    """
    return _family_of_model(model).load_official_weights(model, state, source)


def _convert(source, preset, num_classes, output, family):
    if preset not in _FAMILIES or _FAMILIES[preset] is not family:
        names = sorted(name for name, module in _FAMILIES.items() if module is family)
        raise ValueError(f"preset must be one of {', '.join(names)}; got {preset!r}.")
    if output is not None and not os.fspath(output).endswith(".weights.h5"):
        raise ValueError(f"output must end with '.weights.h5' (Keras weights file); got {output!r}.")
    state, name = read_state(source)
    if num_classes is None:
        num_classes = num_classes_of(state, family.CLASSES_KEY, name, "final_layer")
    model = presets.from_name(preset, num_classes=num_classes)
    family.load_official_weights(model, state, name)
    if output is not None:
        with atomic_write(output) as temporary:  # a file that is there is complete
            model.save_weights(temporary)
        logger.info("Saved %s weights (%d classes) to %s.", preset, num_classes, output)
    return model


_CONVERT_DOC = """Build a {family} preset with the weights of an official checkpoint ({repository}).

    Args:
        source: a ``.pth``/``.pt`` file (read by :func:`load_torch_checkpoint`, no
            PyTorch needed) or a dict of numpy arrays keyed by the official
            parameter names; a ``"state_dict"`` wrapper and ``module.`` /
            ``model.`` prefixes are removed.
        preset: {presets}.
        num_classes: classes of the model. ``None``: those of the checkpoint's
            final convolution (a full checkpoint, e.g. 19 for Cityscapes). A
            trunk-only (ImageNet) checkpoint needs it, and any value works: the
            heads keep their initialisation.
        output: optional ``.weights.h5`` path to save the model's weights to;
            ``presets.from_name(preset, num_classes=..., weights=output)`` loads it.

    Returns:
        The :class:`segzoo.models.SegmentationModel` with the weights loaded.

    Raises:
        CheckpointError: the checkpoint is unreadable or does not fit (missing,
            unexpected or mis-shaped keys are listed).
    """


def convert_ddrnet(source, preset, num_classes=None, output=None):
    return _convert(source, preset, num_classes, output, ddrnet_weights)


def convert_pidnet(source, preset, num_classes=None, output=None):
    return _convert(source, preset, num_classes, output, pidnet_weights)


convert_ddrnet.__doc__ = _CONVERT_DOC.format(family="DDRNet", repository=ddrnet_weights.REPOSITORY,
                                             presets='``"ddrnet23_slim"``, ``"ddrnet23"`` or ``"ddrnet39"``')
convert_pidnet.__doc__ = _CONVERT_DOC.format(family="PIDNet", repository=pidnet_weights.REPOSITORY,
                                             presets='``"pidnet_s"``, ``"pidnet_m"`` or ``"pidnet_l"``')


def convert(source, preset, num_classes=None, output=None):
    """:func:`convert_ddrnet` or :func:`convert_pidnet`, whichever family ``preset`` belongs to."""
    if preset not in _FAMILIES:
        raise ValueError(f"No official checkpoints are known for {preset!r}; "
                         f"presets with some: {', '.join(sorted(_FAMILIES))}.")
    return _convert(source, preset, num_classes, output, _FAMILIES[preset])


def install_imagenet_weights(source, preset):
    """Convert an official ImageNet checkpoint and save its trunk to :func:`imagenet_weights_path`.

    Args:
        source: the authors' ImageNet ``.pth`` file (or a dict of arrays).
        preset: the DDRNet or PIDNet preset it belongs to.

    Returns:
        The path written.
    """
    return save_imagenet_trunk(convert(source, preset, num_classes=2).backbone, preset)


__all__ = ["OFFICIAL_CHECKPOINTS", "CheckpointError", "convert", "convert_ddrnet", "convert_pidnet",
           "imagenet_weights_path", "install_imagenet_weights", "load_official_weights", "load_torch_checkpoint"]
