"""Softmax cross-entropy with class weights, label smoothing and online hard-pixel mining (OHEM)."""

from __future__ import annotations

import keras
from keras import ops

from segzoo.constants import IGNORE_INDEX
from segzoo.losses.base import SegmentationLoss, as_float_list, per_class_values


@keras.saving.register_keras_serializable(package="segzoo")
class CrossEntropy(SegmentationLoss):
    """Sparse softmax cross-entropy on logits, with optional class weights and OHEM.

    For logits ``(B, H, W, C)`` with ``C >= 2`` and labels ``(B, H, W)``. The
    per-pixel loss is ``-log_softmax(logits)[label]`` (numerically stable for
    any logit size). The result is

        sum_i w_i * l_i / sum_i w_i   over the pixels i that count,

    with ``w_i = class_weights[label_i]`` (1 without class weights): weights
    apply per pixel before the mean, as PyTorch's weighted cross-entropy does.

    OHEM (online hard example mining, the DDRNet / PaddleSeg recipe, e.g.
    ``ohem_threshold=0.9, ohem_min_kept=131072``): only the hard pixels count,
    i.e. the valid pixels whose predicted probability of their true class is
    below ``ohem_threshold``; when fewer than ``ohem_min_kept`` are below it,
    the ``ohem_min_kept`` pixels with the lowest probability count instead
    (all valid pixels when there are fewer). Formally a valid pixel counts when
    ``p < ohem_threshold or p <= p_(k)``, with ``p_(k)`` the k-th smallest
    probability among the valid pixels of the batch and
    ``k = min(ohem_min_kept, number of valid pixels)``. The selection carries
    no gradient. ``ohem_min_kept`` counts pixels in the whole batch (one
    replica's batch under a distribution strategy).

    Args:
        ignore_index: label value of pixels that count for nothing, or ``None``.
        class_weights: ``None`` or one non-negative float per class (background first).
        ohem_threshold: ``None`` (no OHEM) or a probability in ``(0, 1]``.
        ohem_min_kept: the least number of pixels OHEM keeps per batch (>= 0).
            Only used when ``ohem_threshold`` is set.
        label_smoothing: in ``[0, 1)``; the target is
            ``(1 - label_smoothing) * one_hot + label_smoothing / C``.
        name: name of the loss.

    Raises at call time (when traced) if the logits have 1 channel or
    ``class_weights`` does not have one value per channel.
    """

    def __init__(
        self,
        ignore_index=IGNORE_INDEX,
        class_weights=None,
        ohem_threshold=None,
        ohem_min_kept=100_000,
        label_smoothing=0.0,
        name="cross_entropy",
    ):
        super().__init__(ignore_index=ignore_index, name=name)
        if class_weights is not None:
            class_weights = as_float_list(class_weights, "class_weights", "CrossEntropy")
        if ohem_threshold is not None and not 0.0 < float(ohem_threshold) <= 1.0:
            raise ValueError(f"CrossEntropy: ohem_threshold must be in (0, 1] or None, got {ohem_threshold}.")
        if int(ohem_min_kept) < 0:
            raise ValueError(f"CrossEntropy: ohem_min_kept must be >= 0, got {ohem_min_kept}.")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"CrossEntropy: label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.class_weights = class_weights
        self.ohem_threshold = None if ohem_threshold is None else float(ohem_threshold)
        self.ohem_min_kept = int(ohem_min_kept)
        self.label_smoothing = float(label_smoothing)

    def pixel_losses(self, labels, logits, valid):
        log_probs = ops.log_softmax(logits, axis=-1)
        true_log_probs = ops.squeeze(ops.take_along_axis(log_probs, labels[..., None], axis=-1), axis=-1)
        losses = -true_log_probs
        if self.label_smoothing:
            smoothing = self.label_smoothing
            losses = (1.0 - smoothing) * losses - smoothing * ops.mean(log_probs, axis=-1)
        weights = None
        if self.class_weights is not None:
            class_weights = per_class_values(self.class_weights, logits.shape[-1], "class_weights", "CrossEntropy")
            weights = ops.take(class_weights, labels)
        if self.ohem_threshold is not None:
            true_probs = ops.exp(ops.stop_gradient(true_log_probs))
            hard = ops.cast(hard_pixels(true_probs, valid, self.ohem_threshold, self.ohem_min_kept), "float32")
            weights = hard if weights is None else weights * hard
        return losses, weights

    def get_config(self):
        config = super().get_config()
        config.update(
            class_weights=self.class_weights,
            ohem_threshold=self.ohem_threshold,
            ohem_min_kept=self.ohem_min_kept,
            label_smoothing=self.label_smoothing,
        )
        return config


def hard_pixels(true_probs, valid, threshold, min_kept):
    """OHEM selection: the valid pixels below ``threshold``, and at least the ``min_kept`` hardest.

    Works with a dynamic number of valid pixels on every backend: invalid
    pixels are pushed past every probability (value 2) and ``top_k`` takes the
    ``min(min_kept, number of pixels)`` smallest values of the whole batch.

    Args:
        true_probs: float32 ``(B, H, W)``, predicted probability of the true class.
        valid: bool ``(B, H, W)``, the pixels that count.
        threshold: float, the OHEM probability threshold.
        min_kept: int >= 0, the least number of pixels to keep.

    Returns:
        bool ``(B, H, W)``: the pixels kept (a subset of ``valid``).
    """
    hard = ops.less(true_probs, threshold)
    if min_kept > 0:
        flat = ops.reshape(ops.where(valid, true_probs, 2.0), (-1,))
        num_pixels = ops.shape(flat)[0]
        k = min(min_kept, num_pixels) if isinstance(num_pixels, int) else ops.minimum(min_kept, num_pixels)
        smallest = -ops.top_k(-flat, k, sorted=True)[0]
        num_valid = ops.sum(ops.cast(valid, "int32"))
        kth_index = ops.maximum(ops.minimum(num_valid, min_kept) - 1, 0)
        kth_smallest = ops.take(smallest, kth_index)
        hard = ops.logical_or(hard, ops.less_equal(true_probs, kth_smallest))
    return ops.logical_and(valid, hard)
