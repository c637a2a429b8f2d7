"""The base class of every backbone."""

import os

import keras

#: Output name -> stride of a ``"P1"``..``"P5"`` pyramid backbone (stride ``2**level``).
PYRAMID_STRIDES = {"P1": 2, "P2": 4, "P3": 8, "P4": 16, "P5": 32}


@keras.saving.register_keras_serializable(package="segzoo")
class Backbone(keras.Model):
    """A functional model from RGB images to a dict of named feature maps.

    Input: float ``(B, H, W, 3)``, RGB values 0..255; each backbone normalises
    inside itself the way its weights expect. Output: a dict of feature maps;
    pyramid backbones name them ``"P1"``..``"P5"`` (stride ``2**level``).
    ``feature_strides`` maps each output name to its stride.

    Subclasses build their graph in ``__init__`` and pass ``inputs`` and
    ``outputs`` to this constructor; their constructor arguments are their
    config (keras-hub's convention), so ``get_config`` only adds them to the
    base config and ``from_config`` is ``cls(**config)``.
    """

    #: Input height and width must be multiples of this.
    size_divisor = 32

    def __init__(self, inputs, outputs, feature_strides, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        missing = set(outputs) ^ set(feature_strides)
        if missing:
            raise ValueError(f"feature_strides and outputs disagree on {sorted(missing)}.")
        self.feature_strides = dict(feature_strides)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def check_weights_argument(weights, backbone_name):
    """Validate a ``weights`` argument: ``None``, ``"imagenet"`` or an existing file path."""
    if weights in (None, "imagenet"):
        return
    if not isinstance(weights, (str, os.PathLike)) or not os.path.isfile(weights):
        raise ValueError(
            f"{backbone_name}: weights must be None, 'imagenet' or the path of an existing "
            f"weights file; got {weights!r}."
        )
