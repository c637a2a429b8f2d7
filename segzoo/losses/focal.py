"""Focal losses (Lin et al., 2017): softmax focal for C >= 2 classes, sigmoid focal for binary models."""

from __future__ import annotations

import numbers

import keras
from keras import ops

from segzoo.constants import IGNORE_INDEX
from segzoo.losses.base import SegmentationLoss, as_float_list, per_class_values

# 1 - p is clamped to this before the power: keeps the gradient of (1 - p) ** gamma
# finite when p rounds to exactly 1 and gamma < 1; the loss changes by < 1e-12 ** gamma.
_MIN_ONE_MINUS_P = 1e-12


@keras.saving.register_keras_serializable(package="segzoo")
class FocalLoss(SegmentationLoss):
    """Softmax focal loss on logits ``(B, H, W, C)``, ``C >= 2``.

    Per pixel, with ``p`` the softmax probability of the true class:

        alpha_t * (1 - p) ** gamma * -log(p)

    averaged over the pixels that count (divided by their number, not by the
    sum of ``alpha_t``: unlike ``CrossEntropy``'s class weights, alpha scales
    the loss). ``gamma=0`` and ``alpha=None`` give plain cross-entropy.

    Args:
        gamma: focusing parameter >= 0 (2 in the paper).
        alpha: ``None`` (1 for every class), a float (the same factor for every
            class), or one non-negative float per class (background first).
        ignore_index: label value of pixels that count for nothing, or ``None``.
        name: name of the loss.
    """

    def __init__(self, gamma=2.0, alpha=None, ignore_index=IGNORE_INDEX, name="focal_loss"):
        super().__init__(ignore_index=ignore_index, name=name)
        if float(gamma) < 0:
            raise ValueError(f"FocalLoss: gamma must be >= 0, got {gamma}.")
        if isinstance(alpha, numbers.Real):
            if alpha < 0:
                raise ValueError(f"FocalLoss: alpha must be >= 0, got {alpha}.")
            alpha = float(alpha)
        elif alpha is not None:
            alpha = as_float_list(alpha, "alpha", "FocalLoss")
        self.gamma = float(gamma)
        self.alpha = alpha

    def pixel_losses(self, labels, logits, valid):
        log_probs = ops.log_softmax(logits, axis=-1)
        true_log_probs = ops.squeeze(ops.take_along_axis(log_probs, labels[..., None], axis=-1), axis=-1)
        # -expm1(log p) is 1 - p without the cancellation of 1 - exp(log p) near p = 1.
        one_minus_p = ops.maximum(-ops.expm1(true_log_probs), _MIN_ONE_MINUS_P)
        losses = -ops.power(one_minus_p, self.gamma) * true_log_probs
        if isinstance(self.alpha, list):
            losses = losses * ops.take(per_class_values(self.alpha, logits.shape[-1], "alpha", "FocalLoss"), labels)
        elif self.alpha is not None:
            losses = self.alpha * losses
        return losses, None

    def get_config(self):
        config = super().get_config()
        config.update(gamma=self.gamma, alpha=self.alpha)
        return config


@keras.saving.register_keras_serializable(package="segzoo")
class BinaryFocalLoss(SegmentationLoss):
    """Sigmoid focal loss on 1-channel logits ``(B, H, W, 1)`` (the RetinaNet form).

    Targets as in :class:`~segzoo.losses.BinaryCrossEntropy`: label > 0 is
    foreground. Per pixel, with ``p_t`` the predicted probability of the
    target and ``alpha_t = alpha`` for foreground, ``1 - alpha`` for background:

        alpha_t * (1 - p_t) ** gamma * -log(p_t)

    computed from log-sigmoids (stable for any logit), averaged over the pixels
    that count.

    Args:
        alpha: weight of foreground pixels in ``[0, 1]``, or ``None`` for no weighting.
        gamma: focusing parameter >= 0.
        ignore_index: label value of pixels that count for nothing, or ``None``.
        name: name of the loss.
    """

    binary = True

    def __init__(self, alpha=0.25, gamma=2.0, ignore_index=IGNORE_INDEX, name="binary_focal_loss"):
        super().__init__(ignore_index=ignore_index, name=name)
        if alpha is not None and not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"BinaryFocalLoss: alpha must be in [0, 1] or None, got {alpha}.")
        if float(gamma) < 0:
            raise ValueError(f"BinaryFocalLoss: gamma must be >= 0, got {gamma}.")
        self.alpha = None if alpha is None else float(alpha)
        self.gamma = float(gamma)

    def pixel_losses(self, labels, logits, valid):
        targets = ops.cast(labels, "float32")
        # z > 0 means "confident and right": p_t = sigmoid(z), 1 - p_t = sigmoid(-z).
        signed_logits = ops.where(labels > 0, logits, -logits)
        losses = -ops.exp(self.gamma * ops.log_sigmoid(-signed_logits)) * ops.log_sigmoid(signed_logits)
        if self.alpha is not None:
            losses = losses * (self.alpha * targets + (1.0 - self.alpha) * (1.0 - targets))
        return losses, None

    def get_config(self):
        config = super().get_config()
        config.update(alpha=self.alpha, gamma=self.gamma)
        return config
