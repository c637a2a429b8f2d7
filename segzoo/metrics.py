"""Segmentation metrics: mean IoU from a streaming confusion matrix, and boundary IoU.

Conventions: truth ``y_true`` holds class ids ``(B, H, W)`` or ``(B, H, W, 1)``,
background 0, ``ignore_index`` (255) for pixels that count for nothing. The
confusion matrix has rows = truth, columns = prediction. The IoU of class c is
``cm[c, c] / (row_c + col_c - cm[c, c])``; a class absent from both truth and
prediction has no IoU (NaN) and is left out of the mean.

- :func:`confusion_matrix` and :func:`iou_from_confusion`: plain numpy, for
  evaluation code.
- :class:`MeanIoU`: the same numbers as a streaming ``keras.metrics.Metric``
  (``keras.ops`` only: TensorFlow, JAX and PyTorch backends, jit-compatible).
- :class:`BoundaryIoU`: IoU restricted to a band along each class's contour.

Logits become class ids through :func:`segzoo.postprocess.classes` (argmax, or
logit > 0 for a 1-channel sigmoid model), as everywhere else in segzoo.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from segzoo import postprocess
from segzoo.constants import IGNORE_INDEX

# Counters are two int32 words, count = high * 2**_LOW_BITS + low (see _PixelCountingMetric).
_LOW_BITS = 20


def confusion_matrix(y_true, y_pred_ids, num_classes, ignore_index=IGNORE_INDEX):
    """Confusion matrix of class ids, in numpy.

    Args:
        y_true: integer array of truth ids, any shape (e.g. ``(B, H, W)``).
        y_pred_ids: integer array of predicted ids, the same number of pixels.
        num_classes: number of classes ``n``.
        ignore_index: truth value of pixels to skip, or ``None``.

    Returns:
        int64 array ``(n, n)``, rows = truth, columns = prediction.

    Raises:
        ValueError: if a truth (other than ``ignore_index``) or a prediction is
            not in ``[0, n)``, naming the values, or if the sizes differ.
    """
    truth = np.asarray(y_true).reshape(-1).astype(np.int64)
    predicted = np.asarray(y_pred_ids).reshape(-1).astype(np.int64)
    if truth.size != predicted.size:
        raise ValueError(f"confusion_matrix: {truth.size} truth pixels but {predicted.size} predicted pixels.")
    if ignore_index is not None:
        counted = truth != ignore_index
        truth, predicted = truth[counted], predicted[counted]
    for kind, ids in (("truth", truth), ("predicted", predicted)):
        bad = np.unique(ids[(ids < 0) | (ids >= num_classes)])
        if bad.size:
            raise ValueError(
                f"confusion_matrix: {kind} ids {bad[:10].tolist()} are not class ids: there are "
                f"{num_classes} classes (0..{num_classes - 1}) and {ignore_index} means ignore."
            )
    counts = np.bincount(truth * num_classes + predicted, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def iou_from_confusion(cm):
    """Per-class IoU from a confusion matrix (rows = truth, columns = prediction).

    Args:
        cm: array ``(n, n)`` of pixel counts.

    Returns:
        float64 array ``(n,)``; NaN for a class absent from both truth and
        prediction. The mean IoU is ``np.nanmean`` of it.
    """
    cm = np.asarray(cm, dtype=np.float64)
    intersection = np.diag(cm)
    return _ratio_or_nan(intersection, cm.sum(axis=0) + cm.sum(axis=1) - intersection)


def _ratio_or_nan(intersection, union):
    union = np.asarray(union, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / union, np.nan)


class _PixelCountingMetric(keras.metrics.Metric):
    """Shared by the IoU metrics: input handling and exact integer counters.

    ``update_state`` turns ``y_true`` / ``y_pred`` into class ids, asks
    :meth:`_batch_counts` for the batch's counters and adds them, with one
    more counter for the excluded pixels, to two int32 words per counter
    (``count = high * 2**20 + low``): exact on every backend (JAX has no int64
    without x64 mode; float32 counts are inexact past 2**24) and additive, so
    ``tf.distribute`` replicas sum correctly. One batch may hold up to
    2**31 - 2**20 pixels.
    """

    def __init__(self, num_classes, num_counters, ignore_index, from_logits, name):
        super().__init__(name=name)
        if int(num_classes) < 2:
            raise ValueError(
                f"{type(self).__name__}: num_classes must be >= 2, got {num_classes}. A binary (1-channel "
                f"sigmoid) model has 2 classes, background and foreground: use num_classes=2."
            )
        self.num_classes = int(num_classes)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.from_logits = bool(from_logits)
        shape = (num_counters + 1,)  # the last counter: excluded pixels
        self.counts_high = self.add_variable(shape=shape, initializer="zeros", dtype="int32", name="counts_high")
        self.counts_low = self.add_variable(shape=shape, initializer="zeros", dtype="int32", name="counts_low")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add one batch."""
        if sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} does not support sample_weight; mark pixels that must not "
                f"count with ignore_index={self.ignore_index} in the labels."
            )
        truth, predicted = self._class_ids(y_true, y_pred)
        n = self.num_classes
        counted = truth >= 0 if self.ignore_index is None else truth != self.ignore_index
        in_range = ops.logical_and(
            ops.logical_and(truth >= 0, truth < n), ops.logical_and(predicted >= 0, predicted < n)
        )
        excluded = ops.sum(ops.cast(ops.logical_and(counted, ops.logical_not(in_range)), "int32"))
        scored = ops.logical_and(counted, in_range)
        batch_counts = ops.concatenate([self._batch_counts(truth, predicted, scored), excluded[None]])
        low = self.counts_low + batch_counts
        carry = ops.right_shift(low, _LOW_BITS)
        self.counts_high.assign(self.counts_high + carry)
        self.counts_low.assign(low - ops.left_shift(carry, _LOW_BITS))

    def _batch_counts(self, truth, predicted, scored):
        """int32 counters of one batch; ``scored`` (bool) marks the pixels to count."""
        raise NotImplementedError

    def _class_ids(self, y_true, y_pred):
        name = type(self).__name__
        truth = ops.convert_to_tensor(y_true)
        if len(truth.shape) == 4 and truth.shape[-1] == 1:
            truth = ops.squeeze(truth, axis=-1)
        truth = ops.cast(truth, "int32")
        y_pred = ops.convert_to_tensor(y_pred)
        if not self.from_logits:
            if len(y_pred.shape) == 4 and y_pred.shape[-1] == 1:
                y_pred = ops.squeeze(y_pred, axis=-1)
            return truth, ops.cast(y_pred, "int32")
        channels = y_pred.shape[-1]
        if len(y_pred.shape) != 4 or channels not in (1, self.num_classes):
            raise ValueError(
                f"{name}(num_classes={self.num_classes}) expects logits (B, H, W, {self.num_classes}) "
                f"or, for a binary sigmoid model with num_classes=2, (B, H, W, 1); got shape "
                f"{tuple(y_pred.shape)}. Pass from_logits=False if y_pred holds class ids."
            )
        if channels == 1:
            if self.num_classes != 2:
                raise ValueError(
                    f"{name}: 1-channel logits come from a binary model, which has 2 classes; "
                    f"got num_classes={self.num_classes}. Use {name}(num_classes=2)."
                )
            foreground = truth > 0
            if self.ignore_index is not None:
                foreground = ops.logical_and(foreground, truth != self.ignore_index)
            truth = ops.where(foreground, 1, truth)
        return truth, postprocess.classes(y_pred)

    def _counts(self):
        high = ops.convert_to_numpy(self.counts_high).astype(np.int64)
        low = ops.convert_to_numpy(self.counts_low).astype(np.int64)
        return (high << _LOW_BITS) + low

    def _counts_float(self):
        return ops.cast(self.counts_high, "float32") * float(1 << _LOW_BITS) + ops.cast(self.counts_low, "float32")

    def excluded_pixels(self):
        """Number of non-ignored pixels left out (truth or prediction not in ``[0, num_classes)``)."""
        return int(self._counts()[-1])

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "from_logits": self.from_logits,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _mean_of_present(intersection, union):
    """Mean of intersection / union over the classes with union > 0 (0 if none), in keras.ops."""
    present = union > 0
    iou = intersection / ops.where(present, union, 1.0)
    num_present = ops.sum(ops.cast(present, "float32"))
    return ops.sum(ops.where(present, iou, 0.0)) / ops.maximum(num_present, 1.0)


_INPUTS_DOC = """
    Inputs of ``update_state(y_true, y_pred)``:

    - ``y_true``: class ids ``(B, H, W)`` or ``(B, H, W, 1)``, any integer dtype.
    - ``y_pred`` with ``from_logits=True`` (the default, what a segzoo model
      outputs): logits ``(B, H, W, C)``. ``C == num_classes`` for a softmax
      model (argmax). ``C == 1`` for a binary sigmoid model, which needs
      ``num_classes=2``: the prediction is logit > 0, and the truth is
      ``y_true > 0`` (any foreground id counts as 1, as in the binary losses).
    - ``y_pred`` with ``from_logits=False``: predicted class ids
      ``(B, H, W)`` or ``(B, H, W, 1)``.

    Pixels whose truth is ``ignore_index`` are skipped. Pixels whose truth
    (not ``ignore_index``) or prediction is outside ``[0, num_classes)`` are
    left out too, since a compiled graph cannot raise: :meth:`excluded_pixels`
    says how many (it should be 0; the data pipeline rejects such labels with
    ``segzoo.data.check_label_values``). Classes absent from both truth and
    prediction have no IoU (NaN per class) and are left out of the mean; with
    no class present the result is 0. Counts are exact integers on every
    backend. ``sample_weight`` is not supported (raises ``ValueError``).
"""


@keras.saving.register_keras_serializable(package="segzoo")
class MeanIoU(_PixelCountingMetric):
    __doc__ = """Streaming mean intersection-over-union over a confusion matrix (rows = truth).
""" + _INPUTS_DOC + """
    Args:
        num_classes: number of classes (2 for a binary model).
        ignore_index: truth value of pixels to skip, or ``None``.
        from_logits: whether ``y_pred`` holds logits (``True``) or class ids.
        name: name of the metric.
    """

    def __init__(self, num_classes, ignore_index=IGNORE_INDEX, from_logits=True, name="mean_iou"):
        super().__init__(num_classes, int(num_classes) ** 2, ignore_index, from_logits, name)

    def _batch_counts(self, truth, predicted, scored):
        n = self.num_classes
        # cells 0 .. n*n - 1: the matrix; cell n*n collects the pixels not scored and is dropped.
        cells = ops.reshape(ops.where(scored, truth * n + predicted, n * n), (-1, 1))
        counts = ops.scatter_update(
            ops.zeros((n * n + 1,), dtype="int32"), cells, ops.ones((ops.shape(cells)[0],), dtype="int32"),
            reduction="add",
        )
        return counts[: n * n]

    def result(self):
        """Mean IoU over the classes present in truth or prediction, a float32 scalar."""
        n = self.num_classes
        cm = ops.reshape(self._counts_float()[: n * n], (n, n))
        intersection = ops.diagonal(cm)
        return _mean_of_present(intersection, ops.sum(cm, axis=0) + ops.sum(cm, axis=1) - intersection)

    def confusion_matrix(self):
        """The accumulated confusion matrix, numpy int64 ``(n, n)``, rows = truth."""
        n = self.num_classes
        return self._counts()[: n * n].reshape(n, n)

    def per_class_iou(self):
        """Per-class IoU, numpy float64 ``(n,)``, NaN for classes absent from truth and prediction."""
        return iou_from_confusion(self.confusion_matrix())


@keras.saving.register_keras_serializable(package="segzoo")
class BoundaryIoU(_PixelCountingMetric):
    __doc__ = """Streaming mean boundary IoU (Cheng et al., "Boundary IoU", CVPR 2021).

    The IoU of each class measured only on its boundary band: the pixels of
    the class within ``d`` pixels (chessboard distance) of its contour, in the
    truth and in the prediction; ``d = max(1, round(dilation_ratio * image
    diagonal))``. The image border counts as a contour (as in the reference
    implementation), and so does the edge of an ignored region: ignored pixels
    belong to no class, in the truth and in the prediction.
    Unlike mean IoU it is as sensitive to the edges of large objects as of
    small ones. Needs a static image size.
""" + _INPUTS_DOC + """
    Args:
        num_classes: number of classes (2 for a binary model).
        dilation_ratio: band width as a fraction of the image diagonal (0.02 in the paper).
        ignore_index: truth value of pixels to skip, or ``None``.
        from_logits: whether ``y_pred`` holds logits (``True``) or class ids.
        name: name of the metric.
    """

    def __init__(self, num_classes, dilation_ratio=0.02, ignore_index=IGNORE_INDEX, from_logits=True,
                 name="boundary_iou"):
        super().__init__(num_classes, 2 * int(num_classes), ignore_index, from_logits, name)
        if not float(dilation_ratio) > 0:
            raise ValueError(f"BoundaryIoU: dilation_ratio must be > 0, got {dilation_ratio}.")
        self.dilation_ratio = float(dilation_ratio)

    def band_width(self, height, width):
        """The band width ``d`` in pixels for an image of ``height`` x ``width``."""
        return max(1, int(round(self.dilation_ratio * (height ** 2 + width ** 2) ** 0.5)))

    def _batch_counts(self, truth, predicted, scored):
        height, width = truth.shape[1], truth.shape[2]
        if height is None or width is None:
            raise ValueError("BoundaryIoU needs a static image size; build the model with a fixed input size.")
        d = self.band_width(height, width)
        # Pixels not scored (ignored, out of range) belong to no class, in truth and prediction alike.
        truth_band = inner_boundary(ops.one_hot(ops.where(scored, truth, -1), self.num_classes), d)
        predicted_band = inner_boundary(ops.one_hot(ops.where(scored, predicted, -1), self.num_classes), d)
        in_scored = ops.cast(scored, "int32")[..., None]
        truth_band = ops.cast(truth_band, "int32") * in_scored
        predicted_band = ops.cast(predicted_band, "int32") * in_scored
        intersection = ops.sum(truth_band * predicted_band, axis=(0, 1, 2))
        union = ops.sum(ops.maximum(truth_band, predicted_band), axis=(0, 1, 2))
        return ops.concatenate([intersection, union])

    def result(self):
        """Mean boundary IoU over the classes with a boundary in truth or prediction, a float32 scalar."""
        counts = self._counts_float()
        n = self.num_classes
        return _mean_of_present(counts[:n], counts[n: 2 * n])

    def per_class_iou(self):
        """Per-class boundary IoU, numpy float64 ``(n,)``, NaN where neither truth nor prediction has a boundary."""
        counts = self._counts()
        n = self.num_classes
        return _ratio_or_nan(counts[:n], counts[n: 2 * n])

    def get_config(self):
        config = super().get_config()
        config.update(dilation_ratio=self.dilation_ratio)
        return config


def inner_boundary(masks, width):
    """The pixels of each mask within ``width`` pixels (chessboard distance) of its contour.

    Args:
        masks: float ``(B, H, W, K)`` of 0/1, one mask per channel.
        width: band width in pixels, >= 1. Outside the image counts as background.

    Returns:
        float ``(B, H, W, K)`` of 0/1: ``mask AND NOT erosion(mask)`` with a
        ``(2 * width + 1)`` square, computed as a separable max-pool of the
        complement.
    """
    outside = ops.pad(1.0 - masks, [[0, 0], [width, width], [width, width], [0, 0]], constant_values=1.0)
    size = 2 * width + 1
    near_outside = ops.max_pool(ops.max_pool(outside, (size, 1), strides=1), (1, size), strides=1)
    return masks * near_outside
