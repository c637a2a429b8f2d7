"""The segmentation model: backbone + head (+ training-only heads with their losses) + resize; loading it."""

import functools
import importlib
import os
import zipfile

import keras

from segzoo.layers import ResizeLike


@keras.saving.register_keras_serializable(package="segzoo")
class TrainingHead:
    """A head that runs only in training, with the losses of its output.

    :class:`SegmentationModel` calls ``layer`` on the backbone's feature dict,
    resizes its output to the input size (float32) and returns it as
    ``"<name>_logits"`` beside ``"logits"``. Each ``(loss, weight)`` of
    ``losses`` adds ``weight * loss(labels, prediction)`` to the training loss, where

    - ``loss=None`` stands for the model's compiled loss (``compile(loss=...)``);
    - ``prediction`` is this head's output, or, for a loss with
      ``reads_outputs = True`` (e.g. :class:`segzoo.losses.BoundaryAwarenessLoss`),
      the dict of every output (``"logits"`` and each ``"<name>_logits"``).

    A head whose weights are all 0 does not run.

    Args:
        layer: a layer from the feature dict to logits at some stride.
        losses: ``(loss, weight)`` pairs; ``loss`` is ``None`` or a serialisable
            Keras loss. Default: the compiled loss with weight 1.
    """

    def __init__(self, layer, losses=((None, 1.0),)):
        self.layer = layer
        self.losses = [(loss, float(weight)) for loss, weight in losses]

    @property
    def active(self):
        """Whether the head runs in training (a loss weight is not 0)."""
        return any(weight != 0 for _, weight in self.losses)

    def get_config(self):
        return {"layer": keras.saving.serialize_keras_object(self.layer),
                "losses": [{"loss": None if loss is None else keras.saving.serialize_keras_object(loss),
                            "weight": weight} for loss, weight in self.losses]}

    @classmethod
    def from_config(cls, config):
        losses = [(None if term["loss"] is None else keras.saving.deserialize_keras_object(term["loss"]),
                   term["weight"]) for term in config["losses"]]
        return cls(keras.saving.deserialize_keras_object(config["layer"]), losses)


@keras.saving.register_keras_serializable(package="segzoo")
class SegmentationModel(keras.Model):
    """Joins a backbone and a head into a model from images to logits.

    ``model(images)`` maps float RGB images ``(B, H, W, 3)`` with values 0..255
    to logits ``(B, H, W, num_classes)`` (float32, also under mixed precision):
    ``num_classes == 1`` is binary segmentation with a sigmoid, otherwise a
    softmax over the classes. The model normalises its input itself.

    Training-only heads (DDRNet's auxiliary head; PIDNet's auxiliary and
    boundary heads) run only when training: then ``model(images, training=True)``
    returns ``{"logits", "<name>_logits" for each head}`` and :meth:`compute_loss`
    adds each head's weighted losses (:class:`TrainingHead`) to the compiled loss
    of the logits. Inference, evaluation and export see the logits alone.

    Args:
        backbone: a :class:`segzoo.backbones.Backbone`.
        head: a layer mapping the backbone's feature dict to logits at some stride.
        aux_head: shorthand for ``training_heads={"aux": TrainingHead(aux_head,
            [(None, aux_loss_weight)])}``: an auxiliary head trained with the
            compiled loss (DDRNet); its output is ``"aux_logits"``.
        aux_loss_weight: weight of the auxiliary loss (0.4 in DDRNet's recipe).
        training_heads: ``{name: TrainingHead}``, the heads that exist only in
            training; each head's layer is the attribute ``<name>_head``
            (``model.aux_head``...). ``name`` must be an identifier.
        class_names: optional names of the predicted classes (index = class id;
            two for a binary model), kept in the saved model for predictions.
        class_colors: optional ``(r, g, b)`` per class, likewise.
    """

    def __init__(self, backbone, head, aux_head=None, aux_loss_weight=0.4, training_heads=None,
                 class_names=None, class_colors=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.head = head
        heads = dict(training_heads or {})
        if aux_head is not None:
            if "aux" in heads:
                raise ValueError("Pass the auxiliary head as aux_head or as training_heads['aux'], not both.")
            heads = {"aux": TrainingHead(aux_head, [(None, aux_loss_weight)]), **heads}
        for name, training_head in heads.items():
            if not name.isidentifier() or name == "logits":
                raise ValueError(f"Training head names must be identifiers other than 'logits'; got {name!r}.")
            if not isinstance(training_head, TrainingHead):
                raise TypeError(f"training_heads[{name!r}] must be a TrainingHead; "
                                f"got {type(training_head).__name__}.")
            setattr(self, f"{name}_head", training_head.layer)  # tracked: its weights save as <name>_head
        self._training_heads = heads
        if "aux" not in heads:
            self.aux_head = None
        self.set_classes(class_names, class_colors)
        # float32 logits: losses and argmax are stable under mixed precision.
        self.resize = ResizeLike(dtype="float32", name="resize_to_input")
        self._compiled_loss_source = self._compiled_loss_fn = None
        self.build(backbone.input_shape)

    @property
    def training_heads(self):
        """``{name: TrainingHead}``, the heads that run only in training (a copy)."""
        return dict(self._training_heads)

    @property
    def aux_loss_weight(self):
        """Weight of the auxiliary head's first loss (0 without an auxiliary head)."""
        aux = self._training_heads.get("aux")
        return aux.losses[0][1] if aux is not None and aux.losses else 0.0

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
        for training_head in self._training_heads.values():
            training_head.layer(features)
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
        if not training:
            return logits
        outputs = {f"{name}_logits": self.resize([training_head.layer(features, training=training), images])
                   for name, training_head in self._training_heads.items() if training_head.active}
        return {"logits": logits, **outputs} if outputs else logits

    def stride_logits(self, images, training=False):
        """Logits ``(B, H / s, W / s, num_classes)`` float32 at the head's output stride ``s`` (8 for DDRNet and
        PIDNet, 4 for DeepLabV3+): the model without its final resize to the input size.

        The official DDRNet and PIDNet models end here too. A caller that needs class ids only can take the
        argmax at this stride and upsample the class map, instead of upsampling every logit channel.
        """
        self._check_size(images)
        logits = self.head(self.backbone(images, training=training), training=training)
        return keras.ops.cast(logits, "float32")

    def _compiled_loss(self):
        """The compiled loss (``self.loss``, set by ``compile``) as a callable, or None."""
        if self._compiled_loss_source is not self.loss:
            self._compiled_loss_source = self.loss
            self._compiled_loss_fn = keras.losses.get(self.loss) if self.loss is not None else None
        return self._compiled_loss_fn

    def training_loss_terms(self, y, y_pred, sample_weight=None):
        """The weighted loss terms of the training heads, ``{"<head>/<loss name>": float32 scalar}``.

        Args:
            y: the labels.
            y_pred: the dict that ``model(images, training=True)`` returns.
            sample_weight: passed to the losses (segzoo's own losses refuse one).

        Each value is ``weight * loss``; terms with weight 0, and those of the
        compiled loss when nothing is compiled, are left out.
        """
        terms = {}
        compiled = self._compiled_loss()
        for name, training_head in self._training_heads.items():
            if not training_head.active:
                continue
            for index, (loss, weight) in enumerate(training_head.losses):
                loss_fn = compiled if loss is None else loss
                if weight == 0 or loss_fn is None:
                    continue
                prediction = y_pred if getattr(loss_fn, "reads_outputs", False) else y_pred[f"{name}_logits"]
                label = "compiled" if loss is None else getattr(loss, "name", None) or f"loss{index}"
                value = keras.ops.cast(loss_fn(y, prediction, sample_weight), "float32")
                terms[f"{name}/{label}"] = weight * value
        return terms

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled loss on the logits, plus every training head's weighted losses."""
        if not isinstance(y_pred, dict):
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        loss = super().compute_loss(x, y, y_pred["logits"], sample_weight, training=training)
        for value in self.training_loss_terms(y, y_pred, sample_weight).values():
            loss = loss + keras.ops.cast(value, loss.dtype)
        return loss

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
            training_heads={name: keras.saving.serialize_keras_object(training_head)
                            for name, training_head in self._training_heads.items()},
            class_names=self.class_names,
            class_colors=[list(color) for color in self.class_colors] if self.class_colors else None,
        )
        return config

    @classmethod
    def from_config(cls, config):
        """Also reads configs of earlier versions, whose auxiliary head was ``aux_head``/``aux_loss_weight``."""
        config = dict(config)
        for key in ("backbone", "head", "aux_head"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        if config.get("training_heads"):
            config["training_heads"] = {name: keras.saving.deserialize_keras_object(head)
                                        for name, head in config["training_heads"].items()}
        return cls(**config)


_REGISTRATION = "@keras.saving.register_keras_serializable("


@functools.lru_cache(maxsize=None)
def serializable_modules() -> tuple[str, ...]:
    """The segzoo modules that register classes a ``.keras`` file may name, found in the package's sources.

    Derived, not listed by hand: every module whose source registers a class
    with ``keras.saving.register_keras_serializable`` (a new layer, loss or
    model anywhere in segzoo is found without being added to a list).
    """
    root = os.path.dirname(os.path.abspath(__file__))
    found = []
    for folder, _, files in os.walk(root):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                if _REGISTRATION not in f.read():
                    continue
            relative = os.path.relpath(os.path.join(folder, name[:-3]), os.path.dirname(root))
            found.append(relative.replace(os.sep, ".").removesuffix(".__init__"))
    return tuple(sorted(found))


def import_serializable_modules() -> None:
    """Import :func:`serializable_modules`, so that ``keras.saving.load_model`` knows every segzoo class."""
    for module in serializable_modules():
        importlib.import_module(module)


def check_keras_file(path) -> None:
    """Check that ``path`` is a complete ``.keras`` archive (a zip with ``config.json``), before Keras reads it.

    Raises:
        CheckpointError: naming the file: empty, truncated (an interrupted
            write or download) or not a Keras archive.
    """
    from segzoo.checkpoints.torch_file import CheckpointError

    path = os.fspath(path)
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes): a save or a copy was interrupted. "
                              f"Use another checkpoint (e.g. last.keras beside it) or train again.")
    with open(path, "rb") as f:
        magic = f.read(4)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as error:
        if magic == b"PK\x03\x04":
            raise CheckpointError(f"{path}: truncated or corrupt .keras file ({size} bytes; {error}): a save, copy "
                                  f"or download was interrupted. Use another checkpoint or copy it again.") from None
        raise CheckpointError(f"{path}: not a .keras file (a Keras 3 model archive); its first bytes are "
                              f"{magic!r}.") from None
    if "config.json" not in names:
        raise CheckpointError(f"{path}: a zip, but not a .keras model archive (no config.json inside).")


def load_model(path):
    """Load a segzoo ``.keras`` file in safe mode (no code from the file runs).

    Imports every segzoo module whose classes the file may name first, so the
    file loads in a fresh process; the optimiser state and compile settings
    come back too.

    Raises:
        CheckpointError: the file is empty, truncated or not a ``.keras``
            archive (:func:`check_keras_file`), or holds a model that is not a
            segzoo :class:`SegmentationModel`.
    """
    from segzoo.checkpoints.torch_file import CheckpointError

    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise CheckpointError(f"{path}: expected a .keras file, as segzoo training writes (best.keras or last.keras "
                              f"in its checkpoint folder).")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file.")
    check_keras_file(path)
    import_serializable_modules()
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise CheckpointError(f"{path}: cannot read this .keras file ({type(error).__name__}: {error}); it may be "
                              f"truncated or corrupt.") from error
    if not isinstance(model, SegmentationModel):
        raise CheckpointError(f"{path}: holds a Keras {type(model).__name__} model named {model.name!r}, not a segzoo "
                              f"segmentation model. segzoo commands need a checkpoint written by segzoo training "
                              f"(best.keras, last.keras) or saved from a segzoo.presets model.")
    return model
