"""The segmentation model: backbone + head (+ training-only auxiliary head) + resize; loading it."""

import importlib
import os

import keras

from segzoo.layers import ResizeLike


@keras.saving.register_keras_serializable(package="segzoo")
class SegmentationModel(keras.Model):
    """Joins a backbone and a head into a model from images to logits.

    ``model(images)`` maps float RGB images ``(B, H, W, 3)`` with values 0..255
    to logits ``(B, H, W, num_classes)`` (float32, also under mixed precision):
    ``num_classes == 1`` is binary segmentation with a sigmoid, otherwise a
    softmax over the classes. The model normalises its input itself.

    An auxiliary head (DDRNet's, for instance) runs only when training: then
    ``model(images, training=True)`` returns ``{"logits", "aux_logits"}`` and
    :meth:`compute_loss` adds ``aux_loss_weight`` times the compiled loss (one
    loss, as ``compile(loss=...)`` received it) of the auxiliary logits. Inference, evaluation and export see the logits alone.

    Args:
        backbone: a :class:`segzoo.backbones.Backbone`.
        head: a layer mapping the backbone's feature dict to logits at some stride.
        aux_head: optional layer mapping the feature dict to auxiliary logits.
        aux_loss_weight: weight of the auxiliary loss (0.4 in DDRNet's recipe).
        class_names: optional names of the predicted classes (index = class id;
            two for a binary model), kept in the saved model for predictions.
        class_colors: optional ``(r, g, b)`` per class, likewise.
    """

    def __init__(self, backbone, head, aux_head=None, aux_loss_weight=0.4, class_names=None,
                 class_colors=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head
        self.aux_loss_weight = float(aux_loss_weight)
        self.set_classes(class_names, class_colors)
        # float32 logits: losses and argmax are stable under mixed precision.
        self.resize = ResizeLike(dtype="float32", name="resize_to_input")
        self._aux_loss_source = self._aux_loss_fn = None
        self.build(backbone.input_shape)

    @property
    def num_classes(self):
        """Number of output channels: 1 for binary (sigmoid), else the number of classes."""
        return self.head.num_classes

    def set_classes(self, class_names, class_colors=None):
        """Record the names (and colours) of the predicted classes, saved with the model."""
        expected = 2 if self.num_classes == 1 else self.num_classes
        for what, values in (("class_names", class_names), ("class_colors", class_colors)):
            if values is not None and len(values) != expected:
                raise ValueError(f"{what} has {len(values)} entries; this model predicts {expected} classes.")
        self.class_names = list(class_names) if class_names is not None else None
        self.class_colors = ([tuple(int(c) for c in color) for color in class_colors]
                             if class_colors is not None else None)

    @property
    def size_divisor(self):
        """Input height and width must be multiples of this."""
        return self.backbone.size_divisor

    def build(self, input_shape):
        images = keras.KerasTensor(tuple(input_shape), dtype=self.input_dtype)
        features = self.backbone(images)
        self.resize([self.head(features), images])
        if self.aux_head is not None:
            self.aux_head(features)
        self.built = True

    def _check_size(self, images):
        divisor = self.size_divisor
        for axis, name in ((1, "height"), (2, "width")):
            size = images.shape[axis]
            if isinstance(size, int) and size % divisor:
                raise ValueError(
                    f"{self.name}: input {name} {size} is not a multiple of {divisor}, which "
                    f"this backbone needs so that its feature maps line up. Resize or pad to "
                    f"{size + divisor - size % divisor} or {size - size % divisor}."
                )

    def call(self, images, training=None):
        self._check_size(images)
        features = self.backbone(images, training=training)
        logits = self.resize([self.head(features, training=training), images])
        if training and self.aux_head is not None and self.aux_loss_weight > 0:
            aux_logits = self.resize([self.aux_head(features, training=training), images])
            return {"logits": logits, "aux_logits": aux_logits}
        return logits

    def _auxiliary_loss(self):
        """The compiled loss (``self.loss``, set by ``compile``) as a callable, or None."""
        if self._aux_loss_source is not self.loss:
            self._aux_loss_source = self.loss
            self._aux_loss_fn = keras.losses.get(self.loss) if self.loss is not None else None
        return self._aux_loss_fn

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled loss on the logits, plus ``aux_loss_weight`` x the same loss on the auxiliary logits."""
        if not isinstance(y_pred, dict):
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        loss = super().compute_loss(x, y, y_pred["logits"], sample_weight, training=training)
        aux_loss_fn = self._auxiliary_loss()
        if aux_loss_fn is None:
            return loss
        aux_loss = aux_loss_fn(y, y_pred["aux_logits"], sample_weight)
        return loss + self.aux_loss_weight * keras.ops.cast(aux_loss, loss.dtype)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Metrics on the main logits only."""
        if isinstance(y_pred, dict):
            y_pred = y_pred["logits"]
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable}
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            head=keras.saving.serialize_keras_object(self.head),
            aux_head=(keras.saving.serialize_keras_object(self.aux_head)
                      if self.aux_head is not None else None),
            aux_loss_weight=self.aux_loss_weight,
            class_names=self.class_names,
            class_colors=[list(color) for color in self.class_colors] if self.class_colors else None,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "head", "aux_head"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


#: Modules whose registered classes a segzoo ``.keras`` file may name.
_SERIALIZABLE_MODULES = ("backbones", "heads", "layers", "losses", "metrics", "schedules")


def load_model(path):
    """Load a segzoo ``.keras`` file in safe mode (no code from the file runs).

    Imports every segzoo module whose classes the file may name first, so the
    file loads in a fresh process; the optimiser state and compile settings
    come back too.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"{path}: expected a .keras file (as segzoo training writes).")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file.")
    for module in _SERIALIZABLE_MODULES:
        importlib.import_module(f"segzoo.{module}")
    return keras.saving.load_model(path, safe_mode=True)
