"""Binary cross-entropy for 1-channel (sigmoid) segmentation models."""

from __future__ import annotations

import keras
from keras import ops

from segzoo.constants import IGNORE_INDEX
from segzoo.losses.base import SegmentationLoss


@keras.saving.register_keras_serializable(package="segzoo")
class BinaryCrossEntropy(SegmentationLoss):
    """Sigmoid cross-entropy on 1-channel logits ``(B, H, W, 1)``.

    The target of a pixel is 1 when its label is a foreground id (any id > 0,
    so a multi-class label can train a binary model), 0 for background; pixels
    at ``ignore_index`` count for nothing. The per-pixel loss is

        -(pos_weight * t * log_sigmoid(x) + (1 - t) * log_sigmoid(-x))

    (stable for any logit ``x``), averaged over the pixels that count.
    ``pos_weight`` follows PyTorch's ``BCEWithLogitsLoss``: it scales the
    foreground term and the mean still divides by the number of pixels.

    Args:
        ignore_index: label value of pixels that count for nothing, or ``None``
            (then every label > 0 is foreground).
        pos_weight: ``None`` or a positive float, the weight of foreground pixels
            (e.g. background pixels / foreground pixels for rare objects).
        name: name of the loss.
    """

    binary = True

    def __init__(self, ignore_index=IGNORE_INDEX, pos_weight=None, name="binary_cross_entropy"):
        super().__init__(ignore_index=ignore_index, name=name)
        if pos_weight is not None and not float(pos_weight) > 0:
            raise ValueError(f"BinaryCrossEntropy: pos_weight must be a positive float or None, got {pos_weight}.")
        self.pos_weight = None if pos_weight is None else float(pos_weight)

    def pixel_losses(self, labels, logits, valid):
        targets = ops.cast(labels, "float32")
        positive_term = targets * ops.log_sigmoid(logits)
        if self.pos_weight is not None:
            positive_term = self.pos_weight * positive_term
        return -(positive_term + (1.0 - targets) * ops.log_sigmoid(-logits)), None

    def get_config(self):
        config = super().get_config()
        config.update(pos_weight=self.pos_weight)
        return config
