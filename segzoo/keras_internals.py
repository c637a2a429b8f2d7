"""Every Keras internal segzoo relies on, behind one door.

Keras has no public name for these; each is used for a reason given beside it,
and ``tests/test_keras_internals.py`` checks each one, so that a Keras upgrade
that moves or changes one breaks this file and its test, loudly, not a feature
far away. segzoo pins Keras to one minor version (``setup.cfg``) for the same reason.
"""

from __future__ import annotations

# keras.applications' modules: their weight URLs and hashes (the backbones download them through
# keras.utils.get_file, as keras.applications does), and their feature-layer names.
from keras.src.applications import efficientnet, efficientnet_v2, mobilenet_v3  # noqa: F401
# The backend resize that takes a size read from a tensor's shape (ops.image.resize needs Python ints
# for a fixed-size graph; this one exports to ONNX exactly at any size).
from keras.src.backend import image as backend_image  # noqa: F401
# Runs a function on symbolic tensors of known shape, every nested layer's call() included (FLOP counting).
from keras.src.backend import compute_output_spec as trace_symbolically  # noqa: F401
# Keras's cache folder ($KERAS_HOME, else ~/.keras), where keras.applications keeps its downloads.
from keras.src.backend.config import keras_home  # noqa: F401


def sublayers(layer, include_self=False, recursive=True):
    """The layers inside ``layer`` (and it, with ``include_self``), nested ones too with ``recursive``."""
    return list(layer._flatten_layers(include_self=include_self, recursive=recursive))


def graph_nodes(model):
    """The nodes of a functional ``model``'s own graph (``[]`` for a subclassed layer)."""
    return [node for depth in getattr(model, "_nodes_by_depth", {}).values() for node in depth]


def producer(tensor):
    """The layer (operation) whose call made the symbolic ``tensor``."""
    return tensor._keras_history.operation


def replace_class(layer, cls):
    """Make ``layer`` an instance of ``cls`` in place (a subclass with the same variables), keeping its weights."""
    if not issubclass(cls, type(layer)):
        raise TypeError(f"{cls.__name__} must subclass {type(layer).__name__} to replace its class.")
    layer.__class__ = cls


def shadow_call(layer, call):
    """Make ``layer.call`` be ``call`` for this layer only (an instance attribute shadows the class's)."""
    object.__setattr__(layer, "call", call)


def restore_call(layer):
    """Undo :func:`shadow_call`."""
    if "call" in vars(layer):
        object.__delattr__(layer, "call")


__all__ = ["backend_image", "efficientnet", "efficientnet_v2", "graph_nodes", "keras_home",
           "mobilenet_v3", "producer", "replace_class", "restore_call", "shadow_call", "sublayers",
           "trace_symbolically"]
