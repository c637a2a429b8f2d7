"""Copying an official PyTorch state dict into a Keras model by a name map, for every family.

A family's name map is ``{official module path: Keras layer}`` (see
:func:`segzoo.backbones.ddrnet_weights.official_layers`, :func:`segzoo.backbones.pidnet_weights.official_layers`).
:func:`assign_state` checks every key of the state dict against it, then
assigns everything or nothing. Parameter names: convolutions ``weight`` (OIHW
-> Keras HWIO ``kernel``) and ``bias``; batch norm ``weight``/``bias``/
``running_mean``/``running_var`` -> ``gamma``/``beta``/``moving_mean``/
``moving_variance``; ``num_batches_tracked`` is ignored.

MMSegmentation's conversions of the authors' files name the same parameters after
MMSegmentation's modules; :func:`rename_mmseg` maps them back by a family's table.
"""

import logging
import re

import keras
import numpy as np

from segzoo import keras_internals
from segzoo.checkpoints.torch_file import CheckpointError

logger = logging.getLogger("segzoo.weights")

#: Inside a residual block, MMSegmentation's ConvModules ``convN.conv`` / ``convN.bn`` are the authors'
#: ``convN`` / ``bnN``, and a ConvModule shortcut ``downsample.conv`` / ``downsample.bn`` is ``downsample.0`` / ``.1``.
_MMSEG_BLOCK_PARTS = ((re.compile(r"\.conv(\d)\.conv\."), r".conv\1."), (re.compile(r"\.conv(\d)\.bn\."), r".bn\1."),
                      (re.compile(r"\.downsample\.conv\."), ".downsample.0."),
                      (re.compile(r"\.downsample\.bn\."), ".downsample.1."))

#: PyTorch OIHW convolution weights -> Keras HWIO kernels.
_OIHW_TO_HWIO = (2, 3, 1, 0)


def official_module_name(layer_name):
    """The official module path of a head sublayer named ``<module>_<index>`` or ``<name>``.

    Head layers are named after the official modules with the last ``.``
    replaced by ``_`` (``scale1_1`` is ``scale1.1``, ``scale_process_2`` is
    ``scale_process.2``); names without a trailing index (``bn1``) are kept.
    """
    stem, _, index = layer_name.rpartition("_")
    return f"{stem}.{index}" if stem and index.isdigit() else layer_name


def sublayer_paths(prefix, parent):
    """``{f"{prefix}.<official name>": layer}`` for every layer with weights inside ``parent``."""
    layers = {}
    for layer in keras_internals.sublayers(parent):
        if layer.weights and not keras_internals.sublayers(layer):
            layers[f"{prefix}.{official_module_name(layer.name)}"] = layer
        elif layer.weights:  # a nested segzoo layer (e.g. a fusion module inside a head)
            layers.update(sublayer_paths(f"{prefix}.{layer.name}", layer))
    return layers


def targets(layer):
    """Official parameter name -> (Keras variable, axis permutation from PyTorch's layout or None)."""
    if isinstance(layer, keras.layers.Conv2D):
        found = {"weight": (layer.kernel, _OIHW_TO_HWIO)}
        if layer.use_bias:
            found["bias"] = (layer.bias, None)
        return found
    if isinstance(layer, keras.layers.BatchNormalization):
        return {"weight": (layer.gamma, None), "bias": (layer.beta, None),
                "running_mean": (layer.moving_mean, None), "running_var": (layer.moving_variance, None)}
    raise TypeError(f"No official parameters known for {type(layer).__name__} {layer.name}.")


def _torch_shape(variable, permutation):
    """The PyTorch shape of the parameter that fills ``variable``."""
    shape = tuple(variable.shape)
    return shape if permutation is None else tuple(shape[axis] for axis in np.argsort(permutation))


def _list(keys, limit=20):
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def assign_state(model, state, layers, *, head_modules, segmentation_modules, optional_modules=(),
                 ignored_modules=(), trunk_extras_ignored=False, source="checkpoint", hint=""):
    """Copy ``state`` into the layers of ``layers``; nothing is assigned unless everything fits.

    Args:
        model: the Keras model (for messages).
        state: ``{official key: numpy array}``, prefixes already removed.
        layers: ``{official module path: Keras layer}``, every layer with weights.
        head_modules: top-level official modules of the heads, in the order
            messages name them. A state dict with none of
            ``segmentation_modules`` is a trunk (an ImageNet checkpoint): head
            modules absent from it keep their initialisation.
        segmentation_modules: modules whose presence makes a segmentation checkpoint.
        optional_modules: modules a segmentation checkpoint may lack (training-only
            heads); they then keep their initialisation.
        ignored_modules: top-level modules of the official code that the model has
            no use for (a classifier, the training criterion's buffers).
        trunk_extras_ignored: in a trunk checkpoint, ignore (and log) top-level
            modules the model does not have (an ImageNet classifier of unknown names).
        source: how to name the checkpoint in messages.
        hint: appended to the error message.

    Returns:
        The names of the modules left at their initialisation (also logged).

    Raises:
        CheckpointError: listing the missing, unexpected and mis-shaped keys.
    """
    expected = {f"{path}.{param}": target for path, layer in layers.items()
                for param, target in targets(layer).items()}
    used = {k: v for k, v in state.items()
            if not k.endswith(".num_batches_tracked") and k.split(".", 1)[0] not in ignored_modules}
    present = {k.split(".", 1)[0] for k in used}
    trunk = not present & set(segmentation_modules)
    may_skip = head_modules if trunk else optional_modules
    skipped = [module for module in may_skip if module not in present]
    if trunk and trunk_extras_ignored:
        known = {path.split(".", 1)[0] for path in layers}
        extras = sorted({k for k in used if k.split(".", 1)[0] not in known})
        if extras:
            logger.info("%s: ignoring %d keys of modules the segmentation model has no use for "
                        "(an ImageNet classifier): %s.", source, len(extras), _list(extras))
            used = {k: v for k, v in used.items() if k not in extras}
    expected_here = {k: v for k, v in expected.items() if k.split(".", 1)[0] not in skipped}

    missing = set(expected_here) - set(used)
    unexpected = set(used) - set(expected)
    misshaped = []
    assignments = []
    for key in sorted(set(used) & set(expected_here)):
        variable, permutation = expected_here[key]
        value, needed = used[key], _torch_shape(variable, permutation)
        if tuple(value.shape) != needed:
            misshaped.append(f"{key}: checkpoint {tuple(value.shape)}, model needs {needed}")
        else:
            assignments.append((variable, value if permutation is None else np.transpose(value, permutation)))
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint: {_list(missing)}")
    if unexpected:
        problems.append(f"not in the model: {_list(unexpected)}")
    if misshaped:
        problems.append("shapes differ: " + "; ".join(misshaped[:20]))
    if problems:
        raise CheckpointError(f"{source} does not fit {model.name} ({model.num_classes} classes): "
                              + ". ".join(problems) + "." + hint)
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))
    if skipped:
        logger.info("%s: %s not in the checkpoint, left at %s initialisation.", source,
                    " and ".join(skipped), "their" if len(skipped) > 1 else "its")
    return skipped


def num_classes_of(state, key, source, head):
    """Classes of a full checkpoint: output channels of its final convolution ``key``."""
    if key not in state:
        raise CheckpointError(f"{source} has no segmentation head ({head}.*): an ImageNet trunk. "
                              f"Pass num_classes for the new head.")
    return int(state[key].shape[0])


def is_mmseg_state(state):
    """Whether ``state`` names its parameters after an MMSegmentation backbone (``stem.*`` or
    ``backbone.stem.*``; the authors' DDRNet and PIDNet call their stem ``conv1``)."""
    return any(key.startswith(("stem.", "backbone.stem.")) for key in state)


def rename_mmseg(state, modules, *, left_out=(), biased_convs=(), source="checkpoint"):
    """An MMSegmentation backbone state dict, renamed to the authors' parameter names.

    A ``backbone.`` prefix is removed. Each key under a module of ``modules``
    (longest match first) gets the authors' module path, and inside it the block
    parts of :data:`_MMSEG_BLOCK_PARTS` their names. Keys under ``left_out`` (heads
    and modules laid out differently) are dropped, with an INFO log line; any other
    key is kept as it is, so that :func:`assign_state` lists it.

    Args:
        state: ``{MMSegmentation key: numpy array}``.
        modules: ``{MMSegmentation module path: the authors' module path}``.
        left_out: MMSegmentation key prefixes that are not read (e.g. ``"decode_head."``).
        biased_convs: the authors' convolutions that have a bias where MMSegmentation's
            ConvModule (followed by a batch norm) may have none: a missing bias is zero,
            which is what the bias-free convolution computes.
        source: how to name the checkpoint in messages.

    Returns:
        ``{official key: numpy array}``.
    """
    by_length = sorted(modules, key=len, reverse=True)
    renamed, dropped = {}, []
    for key, value in state.items():
        key = key.removeprefix("backbone.")
        if key.startswith(tuple(left_out)):
            dropped.append(key)
            continue
        module = next((m for m in by_length if key.startswith(m + ".")), None)
        if module is not None:
            key = modules[module] + key[len(module):]
            for pattern, replacement in _MMSEG_BLOCK_PARTS:
                key = pattern.sub(replacement, key)
        renamed[key] = value
    for conv in biased_convs:
        weight = renamed.get(f"{conv}.weight")
        if weight is not None:
            renamed.setdefault(f"{conv}.bias", np.zeros(weight.shape[0], weight.dtype))
    if dropped:
        logger.info("%s: MMSegmentation keys outside the trunk not read (%d): %s.", source, len(dropped),
                    _list(dropped, limit=5))
    return renamed
