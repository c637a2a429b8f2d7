"""Official checkpoints into segzoo models: DDRNet's PyTorch ``.pth`` files, read without PyTorch.

Where to get the checkpoints: the authors' repository, github.com/ydhongHIT/DDRNet,
README "Pretrained models" (Google Drive links, also in :data:`OFFICIAL_CHECKPOINTS`):
ImageNet-pretrained DDRNet-23-slim, DDRNet-23 and DDRNet-39 (classification
networks: the trunk plus a classifier), and Cityscapes models of DDRNet-23-slim
and DDRNet-23 (19 classes). MMSegmentation's converted files
(``ddrnet23s_in1k_mmseg.pth``...) name their parameters differently
(``backbone.stem...``) and are not read here: convert the authors' files.

One command converts a checkpoint (see ``examples/convert_ddrnet.py``)::

    # ImageNet trunk, cached for presets.from_name(..., weights="imagenet"):
    python examples/convert_ddrnet.py DDRNet23s_imagenet.pth --preset ddrnet23_slim --imagenet
    # Cityscapes model, 19 classes, to a .weights.h5 file:
    python examples/convert_ddrnet.py best_val_smaller.pth --preset ddrnet23_slim \\
        --output ddrnet23_slim_cityscapes.weights.h5

Converted ImageNet trunks live in :func:`imagenet_weights_path`:
``$SEGZOO_WEIGHTS_DIR/<preset>_imagenet.weights.h5``, by default
``$KERAS_HOME/segzoo/`` (``~/.keras/segzoo/``).

Name mapping: the official parameter ``<module path>.<parameter>`` goes to the
Keras layer named after the module path (:mod:`segzoo.backbones.ddrnet`
explains the rule; trunk layers keep their official paths in
``DDRNetBackbone.official_paths``, head modules are ``spp.*`` (DAPPM),
``final_layer.*`` (segmentation head) and ``seghead_extra.*`` (auxiliary
head)). Convolutions: ``weight`` OIHW -> ``kernel`` HWIO, ``bias``. Batch norm:
``weight``/``bias``/``running_mean``/``running_var`` -> ``gamma``/``beta``/
``moving_mean``/``moving_variance``; ``num_batches_tracked`` is ignored.
Ignored as well: the ImageNet files' classifier (``down5.*``, ``last_layer.*``,
``linear.*``) and the training criterion's buffers of the authors' training
code (``loss.*``, e.g. the class weights ``loss.criterion.weight``). The
ImageNet networks run ``layer5`` at stride 1 where the segmentation network
uses stride 2; the weights are the same shape and load as the official training
code loads them.

Reading ``.pth`` files: a PyTorch checkpoint is a zip holding a pickle
(``data.pkl``) and raw tensor storages (``data/<key>``). Unpickling runs code
named in the file, so :func:`load_torch_checkpoint` uses a restricted
unpickler that admits only the few globals a state dict needs (plus numpy
scalars, which training checkpoints hold metrics as) and rebuilds tensors as
numpy arrays; anything else is refused before it runs.
"""

import collections
import logging
import os
import pickle
import zipfile

import keras
import numpy as np

from segzoo.errors import SegzooError

logger = logging.getLogger(__name__)

_DRIVE = "https://drive.google.com/file/d/{}/view"

#: Download pages of the authors' checkpoints (github.com/ydhongHIT/DDRNet, README).
OFFICIAL_CHECKPOINTS = {
    "ddrnet23_slim": {"imagenet": _DRIVE.format("1mg5tMX7TJ9ZVcAiGSB4PEihPtrJyalB4"),
                      "cityscapes": _DRIVE.format("1d_K3Af5fKHYwxSo8HkxpnhiekhwovmiP")},
    "ddrnet23": {"imagenet": _DRIVE.format("1VoUsERBeuCaiuQJufu8PqpKKtGvCTdug"),
                 "cityscapes": _DRIVE.format("16viDZhbmuc3y7OSsUo2vhA7V6kYO0KX6")},
    "ddrnet39": {"imagenet": _DRIVE.format("122CMx6DZBaRRf-dOHYwuDY9vG0_UQ10i")},
}

#: Top-level official modules that segzoo has no use for (see the module docstring).
IGNORED_MODULES = ("down5", "last_layer", "linear", "loss")

#: Official head modules: segzoo layer holding them.
HEAD_MODULES = ("spp", "final_layer", "seghead_extra")


class CheckpointError(SegzooError, ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


# ---------------------------------------------------------------------------
# Reading .pth files without PyTorch
# ---------------------------------------------------------------------------

#: PyTorch storage classes -> numpy dtype of their elements (bfloat16 is read as its bits).
_STORAGE_DTYPES = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "u2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}


class _StorageType:
    """Stands for ``torch.<name>Storage`` in the unpickled data."""

    def __init__(self, name):
        self.name = name


class _Storage:
    """One tensor storage read from the zip: its elements as a 1-D array."""

    def __init__(self, data, storage_type):
        self.data, self.type = data, storage_type


def _bfloat16_to_float32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _rebuild_tensor(storage, offset, size, stride, *unused):
    """``torch._utils._rebuild_tensor_v2``: a numpy copy of a strided view of ``storage``."""
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"Malformed tensor in checkpoint: its storage is a {type(storage).__name__}.")
    data = storage.data
    size, stride = tuple(size), tuple(stride)
    values = (offset, *size, *stride)
    if len(size) != len(stride) or not all(isinstance(v, int) and v >= 0 for v in values):
        raise CheckpointError(f"Malformed tensor in checkpoint: offset {offset}, size {size}, stride {stride}.")
    if 0 not in size:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= data.size:
            raise CheckpointError(f"Malformed tensor in checkpoint: size {size} and stride {stride} from "
                                  f"offset {offset} reach element {last} of a storage of {data.size}.")
    view = np.lib.stride_tricks.as_strided(data[offset:] if data.size else data, shape=size,
                                           strides=tuple(s * data.itemsize for s in stride))
    array = np.array(view, copy=True)
    return _bfloat16_to_float32(array) if storage.type.name == "BFloat16Storage" else array


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    """``torch._utils._rebuild_parameter``: a parameter is its tensor here."""
    return data


def _numpy_scalar(dtype, data=None):
    """``numpy.core.multiarray.scalar`` for numeric dtypes only (training metrics in checkpoints)."""
    if (not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes)
            or len(data) != dtype.itemsize):
        raise CheckpointError(f"Checkpoint holds a numpy scalar of dtype {dtype!r}; only numbers are read.")
    return np.frombuffer(data, dtype, count=1)[0]


def _numpy_dtype(name, *unused):
    dtype = np.dtype(name)
    if dtype.hasobject:
        raise CheckpointError(f"Checkpoint holds a numpy object dtype {name!r}; only numbers are read.")
    return dtype


def _encode(text, encoding):
    """``_codecs.encode``: how protocol-2 pickles store bytes."""
    if not isinstance(text, str) or encoding != "latin1":
        raise CheckpointError("Checkpoint calls _codecs.encode with unexpected arguments.")
    return text.encode("latin1")


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
    ("_codecs", "encode"): _encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a ``data.pkl`` admitting only state-dict globals; storages come from ``read_storage``."""

    def __init__(self, file, read_storage, source):
        super().__init__(file)
        self._read_storage = read_storage
        self._source = source

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        raise CheckpointError(
            f"{self._source}: refusing to load the global '{module}.{name}'. A checkpoint of weights "
            f"needs only tensors and dicts; this file may run code when unpickled. Load it only if you "
            f"trust it, in PyTorch, and re-save its state_dict with torch.save(model.state_dict(), path).")

    def persistent_load(self, pid):
        if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)):
            raise CheckpointError(f"{self._source}: unsupported persistent id {pid!r} in data.pkl.")
        return self._read_storage(pid[2], pid[1])


def load_torch_checkpoint(path):
    """Read a PyTorch ``.pth`` file (zip format, PyTorch >= 1.6) without PyTorch.

    Args:
        path: the ``.pth`` / ``.pt`` file.

    Returns:
        What ``torch.load`` would return, with every tensor as a numpy array
        (same shape and dtype; bfloat16 becomes float32).

    Raises:
        CheckpointError: the file is not a zip checkpoint (e.g. the legacy
            format of PyTorch < 1.6), is malformed, or names a global outside
            the state-dict allowlist (code that would run on unpickling).
    """
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a zip-format PyTorch checkpoint. Files saved by PyTorch < 1.6 (legacy format) "
            f"are not read: re-save with a recent PyTorch, torch.save(torch.load(old), new).")
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("data.pkl")
                   and name.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: expected one '<archive>/data.pkl' in the zip, found {pickles}; "
                                  f"a TorchScript or other file is not a state dict.")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "<"
        if f"{prefix}byteorder" in archive.namelist():
            byteorder = ">" if archive.read(f"{prefix}byteorder").strip() == b"big" else "<"
        storages = {}

        def read_storage(key, storage_type):
            if key not in storages:
                member = f"{prefix}data/{key}"
                try:
                    raw = archive.read(member)
                except KeyError:
                    raise CheckpointError(f"{path}: tensor storage {member} is missing from the zip.") from None
                dtype = np.dtype(_STORAGE_DTYPES[storage_type.name]).newbyteorder(byteorder)
                if len(raw) % dtype.itemsize:
                    raise CheckpointError(f"{path}: storage {member} has {len(raw)} bytes, not a multiple "
                                          f"of {dtype.itemsize} ({storage_type.name}).")
                storages[key] = _Storage(np.frombuffer(raw, dtype).astype(dtype.newbyteorder("=")),
                                         storage_type)
            return storages[key]

        try:
            with archive.open(pickles[0]) as data:
                return _RestrictedUnpickler(data, read_storage, path).load()
        except CheckpointError:
            raise
        except Exception as error:  # anything else in untrusted data is a malformed file
            raise CheckpointError(f"{path}: {pickles[0]} is not a readable checkpoint "
                                  f"({type(error).__name__}: {error}).") from error


# ---------------------------------------------------------------------------
# State dicts
# ---------------------------------------------------------------------------

def _state_dict(checkpoint, source):
    """The flat ``{official key: array}`` of a checkpoint: wrappers and prefixes removed."""
    if isinstance(checkpoint, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(checkpoint.get(wrapper), dict):
                checkpoint = checkpoint[wrapper]
                break
    if not isinstance(checkpoint, dict) or not all(isinstance(k, str) for k in checkpoint):
        raise CheckpointError(f"{source}: not a state dict (a dict of parameter name -> tensor).")
    state = {}
    for key, value in checkpoint.items():
        name = key
        while name.startswith(("module.", "model.")):  # DataParallel, the authors' FullModel
            name = name.split(".", 1)[1]
        if not isinstance(value, np.ndarray):
            if not hasattr(value, "shape"):
                raise CheckpointError(f"{source}: '{key}' is a {type(value).__name__}, not an array.")
            value = np.asarray(value)
        if name in state:
            raise CheckpointError(f"{source}: '{key}' and another key both mean '{name}'.")
        state[name] = value
    return state


def official_layers(model):
    """Official module path -> Keras layer, for every layer with weights of a DDRNet model.

    Args:
        model: a DDRNet :class:`segzoo.models.SegmentationModel` (from a ``ddrnet*`` preset).
    """
    backbone = model.backbone
    layers = {path: backbone.get_layer(name) for name, path in backbone.official_paths.items()}
    parents = {"spp": model.head.spp, "final_layer": model.head.final_layer,
               "seghead_extra": model.aux_head}
    for prefix, parent in parents.items():
        if parent is None:
            continue
        for layer in parent._flatten_layers(include_self=False):
            if layer.weights:
                # Head layers are named "scale1_1", "bn1"...: official names without underscores.
                layers[f"{prefix}.{layer.name.replace('_', '.')}"] = layer
    return layers


#: PyTorch OIHW convolution weights -> Keras HWIO kernels.
_OIHW_TO_HWIO = (2, 3, 1, 0)


def _targets(layer):
    """Official parameter name -> (Keras variable, axis permutation from PyTorch's layout or None)."""
    if isinstance(layer, keras.layers.Conv2D):
        targets = {"weight": (layer.kernel, _OIHW_TO_HWIO)}
        if layer.use_bias:
            targets["bias"] = (layer.bias, None)
        return targets
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


def load_official_weights(model, state, source="checkpoint"):
    """Copy an official DDRNet state dict into ``model``; nothing is assigned unless everything fits.

    A state dict without head keys (``spp.*``, ``final_layer.*``) is a trunk
    (an ImageNet checkpoint): the heads keep their initialisation. A full one
    without ``seghead_extra.*`` leaves the training-only auxiliary head at its
    initialisation. Both are stated in an INFO log line.

    Args:
        model: a DDRNet :class:`segzoo.models.SegmentationModel`.
        state: ``{official key: numpy array}``, prefixes already removed.
        source: how to name the checkpoint in messages.

    Raises:
        CheckpointError: listing the missing, unexpected and mis-shaped keys.
    """
    layers = official_layers(model)
    expected = {f"{path}.{param}": target for path, layer in layers.items()
                for param, target in _targets(layer).items()}
    used = {k: v for k, v in state.items()
            if not k.endswith(".num_batches_tracked") and k.split(".", 1)[0] not in IGNORED_MODULES}
    present = {k.split(".", 1)[0] for k in used}
    if present & {"spp", "final_layer"}:  # a segmentation checkpoint
        skipped = [] if "seghead_extra" in present else ["seghead_extra"]
    else:  # a trunk (ImageNet) checkpoint
        skipped = list(HEAD_MODULES)
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
        hint = ""
        if any(k.startswith(("backbone.", "decode_head.")) for k in state):
            hint = (" The keys look like an MMSegmentation checkpoint; convert the authors' files "
                    "(github.com/ydhongHIT/DDRNet) instead.")
        raise CheckpointError(f"{source} does not fit {model.name} ({model.num_classes} classes): "
                              + ". ".join(problems) + "." + hint)
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))
    if skipped:
        logger.info("%s: %s not in the checkpoint, left at %s initialisation.", source,
                    " and ".join(skipped), "their" if len(skipped) > 1 else "its")
    return model


def _read_state(source):
    if isinstance(source, (str, os.PathLike)):
        return _state_dict(load_torch_checkpoint(source), os.fspath(source)), os.fspath(source)
    if isinstance(source, dict):
        return _state_dict(source, "state dict"), "state dict"
    raise TypeError(f"source must be a .pth path or a dict of arrays; got {type(source).__name__}.")


def convert_ddrnet(source, preset, num_classes=None, output=None):
    """Build a DDRNet preset with the weights of an official checkpoint.

    Args:
        source: a ``.pth`` file (read by :func:`load_torch_checkpoint`, no
            PyTorch needed) or a dict of numpy arrays keyed by the official
            parameter names; a ``"state_dict"`` wrapper and ``module.`` /
            ``model.`` prefixes are removed.
        preset: ``"ddrnet23_slim"``, ``"ddrnet23"`` or ``"ddrnet39"``.
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
    from segzoo import presets

    if output is not None and not os.fspath(output).endswith(".weights.h5"):
        raise ValueError(f"output must end with '.weights.h5' (Keras weights file); got {output!r}.")
    state, name = _read_state(source)
    if num_classes is None:
        if "final_layer.conv2.weight" not in state:
            raise CheckpointError(f"{name} has no segmentation head (final_layer.*): an ImageNet trunk. "
                                  f"Pass num_classes for the new head.")
        num_classes = int(state["final_layer.conv2.weight"].shape[0])
    model = presets.from_name(preset, num_classes=num_classes)
    load_official_weights(model, state, name)
    if output is not None:
        model.save_weights(os.fspath(output))
        logger.info("Saved %s weights (%d classes) to %s.", preset, num_classes, output)
    return model


# ---------------------------------------------------------------------------
# weights="imagenet"
# ---------------------------------------------------------------------------

def imagenet_weights_path(preset):
    """Where the converted ImageNet trunk of ``preset`` is looked for.

    ``$SEGZOO_WEIGHTS_DIR/<preset>_imagenet.weights.h5``; the directory defaults
    to ``$KERAS_HOME/segzoo`` (``~/.keras/segzoo``).
    """
    directory = os.environ.get("SEGZOO_WEIGHTS_DIR") or os.path.join(
        os.environ.get("KERAS_HOME", os.path.join("~", ".keras")), "segzoo")
    return os.path.join(os.path.expanduser(directory), f"{preset}_imagenet.weights.h5")


def install_imagenet_weights(source, preset):
    """Convert an official ImageNet checkpoint and save its trunk to :func:`imagenet_weights_path`.

    Args:
        source: the authors' ImageNet ``.pth`` file (or a dict of arrays).
        preset: the DDRNet preset it belongs to.

    Returns:
        The path written.
    """
    model = convert_ddrnet(source, preset, num_classes=2)
    path = imagenet_weights_path(preset)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model.backbone.save_weights(path)
    logger.info("Saved the %s ImageNet trunk to %s.", preset, path)
    return path


def load_imagenet_weights(backbone, preset):
    """Load the converted ImageNet trunk of ``preset`` into ``backbone``.

    Raises:
        FileNotFoundError: the file is not there; the message says where to
            download the checkpoint and the command that converts it.
    """
    path = imagenet_weights_path(preset)
    if not os.path.isfile(path):
        url = OFFICIAL_CHECKPOINTS.get(preset, {}).get("imagenet", "github.com/ydhongHIT/DDRNet")
        raise FileNotFoundError(
            f"No converted ImageNet weights for {preset} at {path}. Download the authors' ImageNet "
            f"checkpoint ({url}, linked from github.com/ydhongHIT/DDRNet) and convert it once with\n"
            f"    python examples/convert_ddrnet.py <downloaded .pth> --preset {preset} --imagenet\n"
            f"(set SEGZOO_WEIGHTS_DIR to use another directory).")
    backbone.load_weights(path)
    logger.info("Loaded the %s ImageNet trunk from %s.", preset, path)
    return backbone
