"""From logits to probabilities and class ids: the one place inference, evaluation and export share.

Logits are NHWC: ``C == 1`` is binary (sigmoid, class 1 where the logit is
above 0, i.e. probability above 0.5), otherwise a softmax over ``C`` classes.
Written with ``keras.ops``, so the same code runs eagerly, inside a compiled
graph and inside an exported model.
"""

import numpy as np
from keras import ops


def probabilities(logits):
    """Class probabilities ``(B, H, W, K)`` with ``K = max(C, 2)``: a binary model's
    sigmoid becomes ``[1 - p, p]``, so every model yields one channel per class."""
    logits = ops.cast(logits, "float32")
    if logits.shape[-1] == 1:
        foreground = ops.sigmoid(logits)
        return ops.concatenate([1.0 - foreground, foreground], axis=-1)
    return ops.softmax(logits, axis=-1)


def logits_from_probabilities(probabilities, num_channels):
    """Logits ``(B, H, W, num_channels)`` that :func:`probabilities` and :func:`classes` turn back into
    ``probabilities`` ``(B, H, W, K)`` and their classes: log-probabilities, or for a binary model
    (``num_channels == 1``) the one logit ``log(p / (1 - p))`` of its ``[1 - p, p]``. For averaged
    probabilities (test-time augmentation), so that metrics written for logits score them."""
    log_p = ops.log(ops.maximum(ops.cast(probabilities, "float32"), 1e-30))
    if num_channels == 1:
        return log_p[..., 1:] - log_p[..., :1]
    return log_p


def classes(logits):
    """Class ids ``(B, H, W)`` int32: argmax (first maximum on ties), or ``logit > 0`` for a 1-channel model."""
    if logits.shape[-1] == 1:
        return ops.cast(logits[..., 0] > 0, "int32")
    # top_k rather than argmax: Keras's TensorFlow argmax adds sign-bit ops
    # (for -0.0) that LiteRT has no builtin kernel for; TOPK_V2 converts everywhere.
    _, indices = ops.top_k(logits, k=1, sorted=False)
    return ops.cast(indices[..., 0], "int32")


def class_ids(logits) -> np.ndarray:
    """:func:`classes` of numpy ``logits`` ``(..., K)`` as ``uint8`` ids, for a live frame's budget.

    One or two channels are compared in numpy (``logit > 0``; ``logit 1 > logit 0``, so a tie gives 0,
    the first maximum, as :func:`classes`): 0.5-2 ms at 640x480 where the backend's ``top_k`` and the
    round trip through its tensors take about 6. More channels go through :func:`classes`.
    """
    logits = np.asarray(logits)
    if logits.shape[-1] == 1:
        return (logits[..., 0] > 0).astype(np.uint8)
    if logits.shape[-1] == 2:
        return (logits[..., 1] > logits[..., 0]).astype(np.uint8)
    return ops.convert_to_numpy(classes(logits)).astype(np.uint8)


def num_output_classes(num_channels):
    """Number of classes a model with ``num_channels`` logit channels predicts (2 for binary)."""
    return 2 if num_channels == 1 else num_channels


def output_class_names(num_channels, class_names):
    """Names of the classes a model with ``num_channels`` logit channels predicts.

    A binary (1-channel) model trained on a dataset of several classes predicts
    background and foreground: ``[class_names[0], "foreground"]``.
    """
    if num_channels == 1 and len(class_names) != 2:
        return [class_names[0], "foreground"]
    return list(class_names)
