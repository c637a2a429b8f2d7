"""PIDNet's boundary losses: boundary targets from labels, weighted BCE, boundary awareness.

PIDNet (Xu et al. 2023; official ``utils/criterion.py``, ``utils/utils.py``
``FullModel``, ``datasets/base_dataset.py``) trains its D-branch boundary head
with a class-balanced binary cross-entropy against boundaries computed from the
labels (:class:`BoundaryLoss`, weight 20), and adds the semantic loss of the
final output restricted to the pixels where the boundary head is confident
(:class:`BoundaryAwarenessLoss`, weight 1).
"""

from __future__ import annotations

import keras
from keras import ops

from segzoo.losses.base import SegmentationLoss, scale_for_replicas
from segzoo.losses.cross_entropy import CrossEntropy

#: Width (pixels) of the band that official boundaries are dilated to (``edge_size``).
EDGE_SIZE = 4
#: Boundaries closer than this to the image border are dropped (official ``y_k_size``/``x_k_size``).
EDGE_BORDER = 6


def boundary_targets(labels, edge_size=EDGE_SIZE, border=EDGE_BORDER):
    """Boundary map of a label map, as PIDNet's data loader makes it: float32 0/1.

    A pixel is on a boundary when its label (any value, ``ignore_index``
    included) differs from its right or lower neighbour: one line per change
    of label, on its first side, which is what OpenCV's Canny marks on a
    piecewise-constant label image (official ``cv2.Canny(label, 0.1, 0.2)``).
    Lines within ``border`` pixels of the image edge are dropped (official
    ``edge_pad``), and the rest is dilated by an ``edge_size x edge_size``
    square (official ``cv2.dilate``; each output pixel takes the maximum of the
    source offsets -1..+2 here, -2..+1 with OpenCV's anchor: the same band, one
    pixel apart).

    Computed on the labels at training resolution, after augmentation, where
    the official loader computes it before its random scaling and crop (then
    resizes it by nearest neighbour): the band keeps its width in pixels here.

    Args:
        labels: integer ``(B, H, W)`` or ``(B, H, W, 1)`` class ids.
        edge_size: side of the dilation square, pixels (official 4).
        border: frame of the image, pixels, in which lines are dropped (official 6).

    Returns:
        float32 ``(B, H, W)``: 1 on boundary pixels, 0 elsewhere.
    """
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 4:
        labels = ops.squeeze(labels, axis=-1)
    labels = ops.cast(labels, "int32")
    right = ops.not_equal(labels[:, :, :-1], labels[:, :, 1:])
    down = ops.not_equal(labels[:, :-1, :], labels[:, 1:, :])
    right = ops.pad(ops.cast(right, "float32"), ((0, 0), (0, 0), (0, 1)))
    down = ops.pad(ops.cast(down, "float32"), ((0, 0), (0, 1), (0, 0)))
    edges = ops.maximum(right, down)
    if border > 0:
        height, width = ops.shape(edges)[1], ops.shape(edges)[2]
        rows = ops.arange(height)
        cols = ops.arange(width)
        inside_rows = ops.logical_and(rows >= border, rows < height - border)
        inside_cols = ops.logical_and(cols >= border, cols < width - border)
        inside = ops.logical_and(inside_rows[:, None], inside_cols[None, :])
        edges = ops.where(inside[None], edges, 0.0)
    if edge_size > 1:
        edges = ops.max_pool(edges[..., None], edge_size, strides=1, padding="same")[..., 0]
    return edges


@keras.saving.register_keras_serializable(package="segzoo")
class BoundaryLoss(SegmentationLoss):
    """Class-balanced sigmoid cross-entropy of boundary logits against the labels' boundaries.

    PIDNet's ``weighted_bce``: targets ``t`` from :func:`boundary_targets` of the
    (class-id) labels; boundary pixels weigh ``negatives / all`` and the others
    ``positives / all``, and the loss is the mean over every pixel of
    ``weight * bce(logit, t)`` (``ignore_index`` pixels count too, as their
    boundaries do in the official loader). Multiply by 20 for the paper's recipe
    (the weight of the training head, see :class:`segzoo.models.TrainingHead`).

    Shapes: ``y_true`` ``(B, H, W)`` or ``(B, H, W, 1)`` class ids, ``y_pred``
    ``(B, H, W, 1)`` boundary logits at the label size; a float32 scalar.

    Args:
        edge_size: dilation of the boundary targets, pixels (official 4).
        border: frame without boundaries, pixels (official 6).
        name: name of the loss.
    """

    binary = True

    def __init__(self, edge_size=EDGE_SIZE, border=EDGE_BORDER, name="boundary_bce"):
        super().__init__(ignore_index=None, name=name)
        self.edge_size = int(edge_size)
        self.border = int(border)

    def call(self, y_true, y_pred):
        labels, logits = self._standardize(y_true, y_pred)
        logits = ops.squeeze(logits, axis=-1)
        targets = boundary_targets(labels, self.edge_size, self.border)
        positives = ops.sum(targets)
        total = ops.cast(ops.size(targets), "float32")
        weights = ops.where(targets > 0, (total - positives) / total, positives / total)
        losses = -(targets * ops.log_sigmoid(logits) + (1.0 - targets) * ops.log_sigmoid(-logits))
        return ops.mean(weights * losses)

    def get_config(self):
        return {"edge_size": self.edge_size, "border": self.border, "name": self.name}


@keras.saving.register_keras_serializable(package="segzoo")
class BoundaryAwarenessLoss(keras.losses.Loss):
    """The semantic loss of the final logits on the pixels where the boundary head is confident.

    PIDNet's boundary-awareness term (``FullModel``: ``bd_label = where(sigmoid(d) > 0.8,
    labels, ignore)``, then the semantic loss of the final output against
    ``bd_label``). The threshold mask carries no gradient; the semantic loss's
    own ``ignore_index`` marks the other pixels.

    Reads the model's whole training output (``reads_outputs``): ``y_pred`` is
    the dict of :class:`segzoo.models.SegmentationModel` in training, with
    ``logits_key`` (final logits ``(B, H, W, C)``) and ``boundary_key``
    (boundary logits ``(B, H, W, 1)``). ``y_true``: class ids ``(B, H, W)`` or
    ``(B, H, W, 1)``. Returns a float32 scalar (0 when no pixel is confident).

    Args:
        semantic_loss: a :class:`segzoo.losses.SegmentationLoss`; default the
            official OHEM cross-entropy (threshold 0.9, 131072 pixels kept).
        threshold: boundary probability above which a pixel counts (official 0.8).
        logits_key: key of the final logits in the outputs.
        boundary_key: key of the boundary logits in the outputs.
        name: name of the loss.
    """

    reads_outputs = True

    def __init__(self, semantic_loss=None, threshold=0.8, logits_key="logits", boundary_key="boundary_logits",
                 name="boundary_awareness"):
        super().__init__(name=name)
        if semantic_loss is None:
            semantic_loss = CrossEntropy(ohem_threshold=0.9, ohem_min_kept=131072)
        if not isinstance(semantic_loss, SegmentationLoss) or semantic_loss.ignore_index is None:
            raise ValueError("BoundaryAwarenessLoss needs a segzoo SegmentationLoss with an ignore_index "
                             f"as semantic_loss; got {semantic_loss!r}.")
        self.semantic_loss = semantic_loss
        self.threshold = float(threshold)
        self.logits_key = logits_key
        self.boundary_key = boundary_key

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError("BoundaryAwarenessLoss does not support sample_weight.")
        with keras.name_scope(self.name):
            return scale_for_replicas(self.call(y_true, y_pred))

    def call(self, y_true, y_pred):
        labels = ops.convert_to_tensor(y_true)
        if len(labels.shape) == 4:
            labels = ops.squeeze(labels, axis=-1)
        labels = ops.cast(labels, "int32")
        boundary = ops.squeeze(ops.cast(ops.stop_gradient(y_pred[self.boundary_key]), "float32"), axis=-1)
        confident = ops.sigmoid(boundary) > self.threshold
        masked = ops.where(confident, labels, self.semantic_loss.ignore_index)
        return self.semantic_loss.call(masked, y_pred[self.logits_key])

    def get_config(self):
        return {"semantic_loss": keras.saving.serialize_keras_object(self.semantic_loss),
                "threshold": self.threshold, "logits_key": self.logits_key,
                "boundary_key": self.boundary_key, "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["semantic_loss"] = keras.saving.deserialize_keras_object(config["semantic_loss"])
        return cls(**config)
