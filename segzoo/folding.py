"""Batch-norm folding: an inference copy of a model with each BN merged into the convolution before it.

In inference, a batch norm after a convolution is a per-channel affine map,
``y = gamma * (x - mean) / sqrt(var + eps) + beta``, so it can be folded into
the convolution: ``kernel * s`` and a shift ``beta - mean * s (+ bias * s)``
with ``s = gamma / sqrt(var + eps)``. The folded model computes one add per
activation where the batch norm cost two element-wise passes (a multiply and
an add, plus casts under mixed precision).

LiteRT's converter and ONNX Runtime do this themselves; a Keras graph on
TensorFlow, JAX or PyTorch does not (Keras's batch norm is plain multiply and
add ops on variables), which is why :func:`fold_batch_norm` exists.

Pairs are found two ways:

- in functional graphs (the DDRNet trunk, the ``keras.applications``
  backbones): a ``BatchNormalization`` whose only input is the output of a
  ``Conv2D`` or ``DepthwiseConv2D`` that nothing else reads (and that is not a
  model output);
- in segzoo's own layers, which name their pairs in a ``batch_norm_pairs``
  class attribute, ``(("conv", "bn"),)`` for :class:`segzoo.layers.ConvBNAct`.

A batch norm placed *before* a convolution (DDRNet's BN-ReLU-conv heads) has
an activation in between and is left as it is.
"""

import keras
import numpy as np
from keras import ops

from segzoo import keras_internals

CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


@keras.saving.register_keras_serializable(package="segzoo")
class FoldedBatchNormalization(keras.layers.BatchNormalization):
    """A batch norm whose scale was folded into the convolution before it: ``y = x + beta``.

    :func:`fold_batch_norm` turns the batch norms it folds into this class and
    leaves their statistics at the identity (``gamma`` 1, ``moving_mean`` 0,
    ``moving_variance`` ``1 - epsilon``) with the shift in ``beta``, so the
    weights mean the same under either class. Inference only: it never
    updates its statistics.

    Shape: any, channels last; output shape = input shape.
    """

    def call(self, inputs, training=None, mask=None):
        # beta + x, not x + beta: TensorFlow's graph optimiser takes conv -> x + beta for a bias add
        # and, on DDRNet's fusions, fails to fuse it with the residual add (an error in the log);
        # the order costs nothing measurable.
        outputs = ops.add(ops.cast(self.beta, "float32"), ops.cast(inputs, "float32"))
        return ops.cast(outputs, self.compute_dtype)


def _functional_pairs(model):
    """(conv, bn) pairs of a functional model's own graph.

    Only this graph's nodes count: a layer of a ``keras.applications`` model
    that a sub-model reuses also has a node in the original model's graph.
    """
    nodes = keras_internals.graph_nodes(model)
    if not nodes:
        return []
    readers, calls = {}, {}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        for tensor in keras.tree.flatten(node.input_tensors):
            readers[id(tensor)] = readers.get(id(tensor), 0) + 1
    outputs = {id(tensor) for tensor in keras.tree.flatten(model.outputs)}
    pairs = []
    for node in nodes:
        bn, inputs = node.operation, keras.tree.flatten(node.input_tensors)
        if type(bn) is not keras.layers.BatchNormalization or calls[id(bn)] != 1 or len(inputs) != 1:
            continue
        conv = keras_internals.producer(inputs[0])
        if (isinstance(conv, CONVOLUTIONS) and calls.get(id(conv)) == 1
                and readers[id(inputs[0])] == 1 and id(inputs[0]) not in outputs):
            pairs.append((conv, bn))
    return pairs


def _declared_pairs(layer):
    """(conv, bn) pairs a segzoo layer names in its ``batch_norm_pairs``."""
    return [(getattr(layer, conv), getattr(layer, bn)) for conv, bn in getattr(layer, "batch_norm_pairs", ())]


def batch_norm_pairs(model):
    """Every ``(convolution, batch_norm)`` pair of ``model`` that :func:`fold_batch_norm` folds."""
    pairs = []
    for layer in keras_internals.sublayers(model, include_self=True):
        pairs += _functional_pairs(layer) + _declared_pairs(layer)
    return [(conv, bn) for conv, bn in pairs
            if type(bn) is keras.layers.BatchNormalization and bn.center and bn.axis in (-1, 3)]


def _fold_pair(conv, bn):
    """Scale ``conv``'s kernel by the batch norm and move the shift into ``bn.beta``."""
    variance = ops.convert_to_numpy(bn.moving_variance).astype(np.float64)
    scale = 1.0 / np.sqrt(variance + bn.epsilon)
    if bn.scale:
        scale = scale * ops.convert_to_numpy(bn.gamma)
    shift = ops.convert_to_numpy(bn.beta) - ops.convert_to_numpy(bn.moving_mean) * scale
    kernel = ops.convert_to_numpy(conv.kernel).astype(np.float64)
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * scale
    conv.kernel.assign(kernel.astype(np.float32))
    if conv.use_bias:
        shift = shift + ops.convert_to_numpy(conv.bias) * scale
        conv.bias.assign(np.zeros(conv.bias.shape, np.float32))
    bn.beta.assign(shift.astype(np.float32))
    bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, np.float32))
    bn.moving_variance.assign(np.full(bn.moving_variance.shape, 1.0 - bn.epsilon, np.float32))
    if bn.scale:
        bn.gamma.assign(np.ones(bn.gamma.shape, np.float32))
    keras_internals.replace_class(bn, FoldedBatchNormalization)


def fold_batch_norm(model, copy=True):
    """An inference model with each batch norm that follows a convolution folded into it.

    The outputs equal the model's in inference mode (to float32 rounding, about
    1e-6 relative); training the folded model is not meaningful.

    Args:
        model: a built model (a :class:`segzoo.models.SegmentationModel`, or any
            Keras model whose class round-trips through ``get_config``).
        copy: fold a copy (default) and leave ``model`` as it is; ``False``
            folds ``model`` in place.

    Returns:
        The folded model (``trainable`` off), with ``folded_batch_norms``, the
        number of batch norms folded.
    """
    if copy:
        folded = type(model).from_config(model.get_config())
        folded.build_from_config(model.get_build_config())
        folded.set_weights(model.get_weights())
        model = folded
    pairs = batch_norm_pairs(model)
    for conv, bn in pairs:
        _fold_pair(conv, bn)
    model.trainable = False
    model.folded_batch_norms = len(pairs)
    return model
