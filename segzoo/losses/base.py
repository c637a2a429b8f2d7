"""What every segzoo loss shares: input checks, the pixels that count, the masked mean.

Shapes and dtypes (all losses):

- ``y_true``: integer class ids ``(B, H, W)`` or ``(B, H, W, 1)``, any integer
  (or integral float) dtype. Background is 0; ``ignore_index`` marks pixels
  that count for nothing.
- ``y_pred``: logits ``(B, H, W, C)`` at the label size, any float dtype
  (float16 / bfloat16 under mixed precision). Computation is float32.
- Result: a float32 scalar, the (weighted) mean of the per-pixel loss over the
  pixels that count; 0 when no pixel counts (never NaN).

Under a ``tf.distribute`` strategy, ``loss(y_true, y_pred)`` is the replica's
mean divided by the number of replicas (what Keras's training loop expects);
``loss.call`` always gives the plain mean.

Per-sample ``sample_weight`` is not supported: every segzoo loss raises a
``ValueError`` when one is passed. Mark pixels with ``ignore_index`` to drop
them, or use the class weights of the loss.
"""

from __future__ import annotations

import keras
from keras import ops

from segzoo.constants import IGNORE_INDEX


class SegmentationLoss(keras.losses.Loss):
    """Base class: the weighted mean of a per-pixel loss over the pixels that count.

    A pixel counts when its label is not ``ignore_index`` and, for softmax
    losses, is a class id in ``[0, C)``. Labels outside that range are treated
    like ``ignore_index`` (they cannot raise inside a compiled graph); the data
    pipeline rejects them upstream (``segzoo.data.check_label_values``).

    Subclasses set ``binary`` (``True``: 1-channel sigmoid logits, ``False``:
    ``C >= 2`` softmax logits) and implement :meth:`pixel_losses`.

    Args:
        ignore_index: label value of pixels that count for nothing, or ``None``
            when every label value is a class id.
        name: name of the loss (default: derived from the class name).
    """

    binary = False

    def __init__(self, ignore_index=IGNORE_INDEX, name=None):
        super().__init__(name=name)
        self.ignore_index = None if ignore_index is None else int(ignore_index)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} does not support sample_weight (got one from "
                f"model.fit or a dataset yielding (x, y, weight)). Mark pixels that must "
                f"not count with ignore_index={self.ignore_index} in the labels, or weigh "
                f"classes with the loss's own argument (class_weights, alpha, pos_weight)."
            )
        with keras.name_scope(self.name):
            return scale_for_replicas(self.call(y_true, y_pred))

    def call(self, y_true, y_pred):
        """Return the mean loss over the pixels that count, a float32 scalar."""
        labels, logits = self._standardize(y_true, y_pred)
        valid = self._valid_pixels(labels, ops.shape(logits)[-1])
        if self.binary:
            logits = ops.squeeze(logits, axis=-1)
            labels = ops.cast(labels > 0, "int32")
        labels = ops.where(valid, labels, 0)
        losses, weights = self.pixel_losses(labels, logits, valid)
        weights = ops.cast(valid, "float32") if weights is None else ops.where(valid, weights, 0.0)
        # where() keeps a non-finite loss on an uncounted pixel out of the sum.
        total = ops.sum(ops.where(weights > 0, losses * weights, 0.0))
        count = ops.sum(weights)
        return total / ops.where(count > 0, count, 1.0)

    def pixel_losses(self, labels, logits, valid):
        """Per-pixel loss and optional per-pixel weight, both float32 ``(B, H, W)``.

        Args:
            labels: int32 ``(B, H, W)``: class ids (binary losses: 0/1 targets),
                0 on pixels that do not count.
            logits: float32 ``(B, H, W, C)`` (binary losses: ``(B, H, W)``).
            valid: bool ``(B, H, W)``, the pixels that count.

        Returns:
            ``(losses, weights)``; ``weights=None`` means 1 on every valid pixel.
            The mean is ``sum(weights * losses) / sum(weights)`` over valid pixels.
        """
        raise NotImplementedError

    def _standardize(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        labels = ops.convert_to_tensor(y_true)
        label_shape = tuple(labels.shape)
        if len(labels.shape) == 4 and labels.shape[-1] == 1:
            labels = ops.squeeze(labels, axis=-1)
        labels = ops.cast(labels, "int32")
        name = type(self).__name__
        if len(logits.shape) != 4 or len(labels.shape) != 3:
            raise ValueError(
                f"{name} expects labels (B, H, W) or (B, H, W, 1) and logits (B, H, W, C); "
                f"got labels of shape {label_shape} and logits of shape {tuple(logits.shape)}."
            )
        for axis, (label_size, logit_size) in enumerate(zip(labels.shape[1:], logits.shape[1:3])):
            if label_size is not None and logit_size is not None and label_size != logit_size:
                raise ValueError(
                    f"{name}: labels {tuple(labels.shape)} and logits {tuple(logits.shape)} differ in "
                    f"size (axis {axis + 1}). The model must output logits at the label size."
                )
        channels = logits.shape[-1]
        if self.binary and channels is not None and channels != 1:
            raise ValueError(
                f"{name} is a binary loss for 1-channel (sigmoid) logits; got {channels} channels. "
                f"Use CrossEntropy or FocalLoss for a softmax model with num_classes >= 2."
            )
        if not self.binary and channels == 1:
            raise ValueError(
                f"{name} is a softmax loss for logits with C >= 2 channels; got 1 channel. "
                f"Use BinaryCrossEntropy or BinaryFocalLoss for a 1-channel (sigmoid) model."
            )
        return labels, logits

    def _valid_pixels(self, labels, num_channels):
        valid = labels >= 0
        if self.ignore_index is not None:
            valid = ops.logical_and(valid, labels != self.ignore_index)
        if not self.binary:
            valid = ops.logical_and(valid, labels < num_channels)
        return valid

    def get_config(self):
        return {"ignore_index": self.ignore_index, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def scale_for_replicas(loss):
    """Divide ``loss`` by the number of ``tf.distribute`` replicas, as Keras's own losses do.

    Under a ``tf.distribute`` strategy (MirroredStrategy) Keras sums the
    replicas' gradients and multiplies the reported loss back by the number of
    replicas, so each replica's loss must be divided by it. Other backends
    (JAX ``keras.distribution``: one loss over the global batch) need nothing.
    """
    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf  # TensorFlow-only path

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss


def per_class_values(values, num_classes, argument, loss_name):
    """Check a per-class list (class weights, alpha) against the number of logit channels.

    Args:
        values: list of floats, one per class, or ``None``.
        num_classes: static channel count of the logits (``None`` if unknown).
        argument: the constructor argument's name, for the error message.
        loss_name: the loss's class name, for the error message.

    Returns:
        A float32 tensor ``(C,)``.
    """
    if num_classes is not None and len(values) != num_classes:
        raise ValueError(
            f"{loss_name}: {argument} has {len(values)} values but the logits have "
            f"{num_classes} classes; give one value per class (background first)."
        )
    return ops.convert_to_tensor(values, dtype="float32")


def as_float_list(values, argument, loss_name):
    """Turn a per-class sequence (list, tuple, numpy array) into a JSON-friendly list of floats."""
    try:
        floats = [float(v) for v in values]
    except TypeError as error:
        raise ValueError(f"{loss_name}: {argument} must be a list of floats, got {values!r}.") from error
    if not floats or any(v < 0 for v in floats):
        raise ValueError(f"{loss_name}: {argument} must be a non-empty list of non-negative floats, got {floats}.")
    return floats
