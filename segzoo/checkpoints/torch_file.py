"""Reading PyTorch ``.pth`` checkpoints without PyTorch, for every model family.

A PyTorch checkpoint is a zip holding a pickle (``data.pkl``) and raw tensor
storages (``data/<key>``). Unpickling runs code named in the file, so
:func:`load_torch_checkpoint` uses a restricted unpickler that admits only the
few globals a state dict needs (plus numpy scalars, which training checkpoints
hold metrics as) and rebuilds tensors as numpy arrays; anything else is refused
before it runs. :func:`state_dict` turns what was read into a flat
``{parameter name: array}``. Nothing here knows about any model: the name maps
of each family live in :mod:`segzoo.backbones.ddrnet_weights` and :mod:`segzoo.backbones.pidnet_weights`.
"""

import collections
import os
import pickle
import zipfile

import numpy as np

from segzoo.errors import SegzooError


class CheckpointError(SegzooError, ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


def _env_limit(name, default):
    value = os.environ.get(f"SEGZOO_{name}")
    return int(value) if value else default


# Bounds on what an untrusted .pth may make the reader allocate. Raise one with the
# environment variable SEGZOO_<NAME>, or in Python by assigning segzoo.checkpoints.torch_file.<NAME>.
#: Bytes of one tensor (default 1 GiB; official DDRNet and PIDNet checkpoints hold at most ~150 MB).
MAX_TENSOR_BYTES = _env_limit("MAX_TENSOR_BYTES", 1 << 30)
#: Inflated bytes of all members of one checkpoint zip (default 2 GiB).
MAX_CHECKPOINT_BYTES = _env_limit("MAX_CHECKPOINT_BYTES", 2 << 30)


def _limit_hint(name):
    return (f"If you trust this file, raise the limit with the environment variable SEGZOO_{name} "
            f"(or segzoo.checkpoints.torch_file.{name} in Python).")


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
        elements = int(np.prod(size, dtype=object))
        if elements * data.itemsize > MAX_TENSOR_BYTES:
            raise CheckpointError(f"A tensor in the checkpoint of size {size} would take {elements * data.itemsize} "
                                  f"bytes, more than MAX_TENSOR_BYTES ({MAX_TENSOR_BYTES}). "
                                  f"{_limit_hint('MAX_TENSOR_BYTES')}")
        if elements > data.size:
            raise CheckpointError(f"Malformed tensor in checkpoint: size {size} with stride {stride} repeats the "
                                  f"elements of its storage of {data.size} (a stride-0 or overlapping view would "
                                  f"inflate it to {elements} elements); a state dict holds no such tensor.")
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
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file.")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic == b"PK\x03\x04" or os.path.getsize(path) == 0:
            raise CheckpointError(f"{path}: incomplete or corrupt download ({os.path.getsize(path)} bytes, the end "
                                  f"of the zip is missing). Download the checkpoint again.")
        raise CheckpointError(
            f"{path} is not a zip-format PyTorch checkpoint. Files saved by PyTorch < 1.6 (legacy format) "
            f"are not read: re-save with a recent PyTorch, torch.save(torch.load(old), new).")
    with zipfile.ZipFile(path) as archive:
        inflated = sum(info.file_size for info in archive.infolist())
        if inflated > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(f"{path}: its members inflate to {inflated} bytes, more than MAX_CHECKPOINT_BYTES "
                                  f"({MAX_CHECKPOINT_BYTES}). {_limit_hint('MAX_CHECKPOINT_BYTES')}")
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
                    stored = archive.getinfo(member).file_size
                    if stored > MAX_TENSOR_BYTES:
                        raise CheckpointError(f"{path}: tensor storage {member} inflates to {stored} bytes, more "
                                              f"than MAX_TENSOR_BYTES ({MAX_TENSOR_BYTES}). "
                                              f"{_limit_hint('MAX_TENSOR_BYTES')}")
                    raw = archive.read(member)
                except KeyError:
                    raise CheckpointError(f"{path}: tensor storage {member} is missing from the zip.") from None
                except (zipfile.BadZipFile, EOFError, OSError) as error:
                    raise CheckpointError(f"{path}: tensor storage {member} cannot be read ({error}): incomplete "
                                          f"or corrupt download. Download the checkpoint again.") from None
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

def state_dict(checkpoint, source):
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


def read_state(source):
    """``(state dict, name for messages)`` of a ``.pth`` path or of a dict of arrays.

    Args:
        source: a ``.pth`` / ``.pt`` file (read by :func:`load_torch_checkpoint`)
            or a dict of numpy arrays keyed by parameter name.
    """
    if isinstance(source, (str, os.PathLike)):
        return state_dict(load_torch_checkpoint(source), os.fspath(source)), os.fspath(source)
    if isinstance(source, dict):
        return state_dict(source, "state dict"), "state dict"
    raise TypeError(f"source must be a .pth path or a dict of arrays; got {type(source).__name__}.")
