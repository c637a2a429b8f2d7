"""Segmentation losses on logits, for the TensorFlow, JAX and PyTorch backends.

Softmax models (``C >= 2`` channels): :class:`CrossEntropy` (class weights,
label smoothing, OHEM) and :class:`FocalLoss`. Binary models (1 channel):
:class:`BinaryCrossEntropy` and :class:`BinaryFocalLoss`. PIDNet's boundary head:
:class:`BoundaryLoss` and :class:`BoundaryAwarenessLoss`. Every loss ignores
pixels labelled ``ignore_index`` (255) and returns the float32 mean over the
pixels that count (0 when none does). See :mod:`segzoo.losses.base`.

    loss = segzoo.losses.get("ce", ohem_threshold=0.9, ohem_min_kept=131072)
"""

from segzoo.losses.base import SegmentationLoss
from segzoo.losses.binary import BinaryCrossEntropy
from segzoo.losses.boundary import BoundaryAwarenessLoss, BoundaryLoss, boundary_targets
from segzoo.losses.cross_entropy import CrossEntropy
from segzoo.losses.focal import BinaryFocalLoss, FocalLoss

#: name accepted by :func:`get` -> loss class
LOSSES = {
    "ce": CrossEntropy,
    "focal": FocalLoss,
    "bce": BinaryCrossEntropy,
    "binary_focal": BinaryFocalLoss,
}


def get(name, **kwargs):
    """Build a loss by its short name (``'ce'``, ``'focal'``, ``'bce'``, ``'binary_focal'``).

    ``kwargs`` go to the loss's constructor. Raises ``ValueError`` listing the
    valid names for an unknown one.
    """
    try:
        loss_class = LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}.") from None
    return loss_class(**kwargs)


__all__ = ["LOSSES", "BinaryCrossEntropy", "BinaryFocalLoss", "BoundaryAwarenessLoss", "BoundaryLoss", "CrossEntropy", "FocalLoss", "SegmentationLoss", "boundary_targets", "get"]
