"""EfficientNet (B0-B3) and EfficientNetV2 (B0-B3, S, M) pyramids over ``keras.applications``."""

import dataclasses
from typing import Callable

import keras
# The URLs and md5 hashes of keras.applications' weight files (no public name).
from segzoo.keras_internals import efficientnet as _keras_efficientnet
from segzoo.keras_internals import efficientnet_v2 as _keras_efficientnet_v2

from segzoo.backbones.applications import WeightsFile, resolve_weights, tap_features
from segzoo.backbones.base import PYRAMID_STRIDES, Backbone, check_weights_argument
from segzoo.layers.normalization import IMAGENET_MEAN, IMAGENET_STD, ImageNormalization


@dataclasses.dataclass(frozen=True)
class EfficientNetVariant:
    """One EfficientNet of ``keras.applications`` and where its pyramid is tapped.

    Attributes:
        builder: the ``keras.applications`` function.
        version: 1 (EfficientNet) or 2 (EfficientNetV2).
        model_name: the function's default model name, which names its weights file.
        weights_key: the variant's key in ``keras.applications``' weight hashes.
        taps: ``{level: (layer name, channels)}``: the last block of each stride.
    """

    builder: Callable
    version: int
    model_name: str
    weights_key: str
    taps: dict

    def weights_file(self):
        """The ``*_notop.h5`` ImageNet weights file that ``keras.applications`` downloads."""
        module = _keras_efficientnet if self.version == 1 else _keras_efficientnet_v2
        file_name = f"{self.model_name}_notop.h5"
        return WeightsFile(file_name, module.BASE_WEIGHTS_PATH + file_name,
                           module.WEIGHTS_HASHES[self.weights_key][1])


def _taps(p1, p2, p3, p4, p5):
    return {"P1": p1, "P2": p2, "P3": p3, "P4": p4, "P5": p5}


_apps = keras.applications

#: The variants and their taps: the output of the last block at each stride
#: (P5: the last block of the network). The 1x1 "top" convolution before
#: ImageNet pooling (1280+ channels) is left out, as timm's pyramids do.
EFFICIENTNET_VARIANTS = {
    "b0": EfficientNetVariant(_apps.EfficientNetB0, 1, "efficientnetb0", "b0", _taps(
        ("block1a_project_bn", 16), ("block2b_add", 24), ("block3b_add", 40),
        ("block5c_add", 112), ("block7a_project_bn", 320))),
    "b1": EfficientNetVariant(_apps.EfficientNetB1, 1, "efficientnetb1", "b1", _taps(
        ("block1b_add", 16), ("block2c_add", 24), ("block3c_add", 40),
        ("block5d_add", 112), ("block7b_add", 320))),
    "b2": EfficientNetVariant(_apps.EfficientNetB2, 1, "efficientnetb2", "b2", _taps(
        ("block1b_add", 16), ("block2c_add", 24), ("block3c_add", 48),
        ("block5d_add", 120), ("block7b_add", 352))),
    "b3": EfficientNetVariant(_apps.EfficientNetB3, 1, "efficientnetb3", "b3", _taps(
        ("block1b_add", 24), ("block2c_add", 32), ("block3c_add", 48),
        ("block5e_add", 136), ("block7b_add", 384))),
    "v2b0": EfficientNetVariant(_apps.EfficientNetV2B0, 2, "efficientnetv2-b0", "b0", _taps(
        ("block1a_project_activation", 16), ("block2b_add", 32), ("block3b_add", 48),
        ("block5e_add", 112), ("block6h_add", 192))),
    "v2b1": EfficientNetVariant(_apps.EfficientNetV2B1, 2, "efficientnetv2-b1", "b1", _taps(
        ("block1b_add", 16), ("block2c_add", 32), ("block3c_add", 48),
        ("block5f_add", 112), ("block6i_add", 192))),
    "v2b2": EfficientNetVariant(_apps.EfficientNetV2B2, 2, "efficientnetv2-b2", "b2", _taps(
        ("block1b_add", 16), ("block2c_add", 32), ("block3c_add", 56),
        ("block5f_add", 120), ("block6j_add", 208))),
    "v2b3": EfficientNetVariant(_apps.EfficientNetV2B3, 2, "efficientnetv2-b3", "b3", _taps(
        ("block1b_add", 16), ("block2c_add", 40), ("block3c_add", 56),
        ("block5g_add", 136), ("block6l_add", 232))),
    "v2s": EfficientNetVariant(_apps.EfficientNetV2S, 2, "efficientnetv2-s", "-s", _taps(
        ("block1b_add", 24), ("block2d_add", 48), ("block3d_add", 64),
        ("block5i_add", 160), ("block6o_add", 256))),
    "v2m": EfficientNetVariant(_apps.EfficientNetV2M, 2, "efficientnetv2-m", "-m", _taps(
        ("block1c_add", 24), ("block2e_add", 48), ("block3e_add", 80),
        ("block5n_add", 176), ("block7e_add", 512))),
}


def _renormalized(model, features, name):
    """``(inputs, features)`` of ``model`` with its ``Normalization`` preprocessing replaced.

    ``keras.applications`` puts ``Rescaling(1/255)`` and a ``Normalization``
    layer in front of EfficientNet V1 and V2-B0..B3. Two faults follow: V1's
    statistics are those of its weights file (and a correction layer is added
    for ``weights="imagenet"`` only), and a ``Normalization`` layer's statistics
    become inputs of the graph that the ONNX exporter leaves unfed. The model is
    therefore cut before its first convolution and fed by
    :class:`segzoo.layers.ImageNormalization` with ImageNet's mean and std,
    ``(x / 255 - mean) / std``, which every variant's weights expect.
    """
    first = "stem_conv_pad" if any(layer.name == "stem_conv_pad" for layer in model.layers) else "stem_conv"
    trunk = keras.Model(model.get_layer(first).input, features, name=f"{name}_trunk")
    inputs = keras.Input(model.input_shape[1:], name="images")
    return inputs, trunk(ImageNormalization(IMAGENET_MEAN, IMAGENET_STD, name="imagenet_normalization")(inputs))


@keras.saving.register_keras_serializable(package="segzoo")
class EfficientNetBackbone(Backbone):
    """EfficientNet or EfficientNetV2 from ``keras.applications`` as a feature pyramid.

    Outputs ``{"P1": ..., "P5": ...}`` at strides 2, 4, 8, 16, 32: the last
    block of each stride, named in :data:`EFFICIENTNET_VARIANTS` with its
    channels. ``keras.applications`` cannot dilate the last stage, so P5 stays
    at stride 32.

    Input: float RGB ``(B, H, W, 3)`` with values 0..255, H and W multiples of
    32. The backbone normalises inside itself as its ImageNet weights expect:

    - V1 (``b0``-``b3``) and V2 ``v2b0``-``v2b3``: ImageNet's mean and std,
      ``(x / 255 - mean) / std``, by :class:`segzoo.layers.ImageNormalization`
      in place of ``keras.applications``' own layers (see :func:`_renormalized`).
    - V2 ``v2s``, ``v2m``: ``include_preprocessing=True``, ``x / 128 - 1``
      (-1 to 0.99), as their ImageNet weights were trained.

    Args:
        variant: a key of :data:`EFFICIENTNET_VARIANTS`: "b0", "b1", "b2",
            "b3", "v2b0", "v2b1", "v2b2", "v2b3", "v2s", "v2m".
        input_shape: ``(H, W, 3)``, ``None`` for sizes chosen at run time.
        weights: ``None`` (random initialisation), ``"imagenet"`` (the
            ``keras.applications`` notop file, downloaded to Keras's cache on
            first use; offline, an error says where to place it by hand), or
            the path of a ``keras.applications`` notop ``.h5`` file of this variant.
            ``weights`` is not part of the config: a saved model holds its own
            weights and never downloads on loading.
    """

    def __init__(self, variant="b0", input_shape=(None, None, 3), weights=None, name=None,
                 **kwargs):
        if variant not in EFFICIENTNET_VARIANTS:
            raise ValueError(f"Unknown EfficientNet variant {variant!r}; valid: "
                             f"{', '.join(EFFICIENTNET_VARIANTS)}.")
        name = name or f"efficientnet{variant}_backbone"
        check_weights_argument(weights, name)
        spec = EFFICIENTNET_VARIANTS[variant]
        options = {"include_preprocessing": True} if spec.version == 2 else {}
        model = spec.builder(
            include_top=False, input_shape=tuple(input_shape),
            weights=resolve_weights(weights, spec.weights_file(), name), **options)
        taps = tap_features(model, {level: layer for level, (layer, _) in spec.taps.items()})
        inputs = model.input
        if any(isinstance(layer, keras.layers.Normalization) for layer in model.layers):
            inputs, taps = _renormalized(model, taps, name)
        super().__init__(inputs, taps, PYRAMID_STRIDES, name=name, **kwargs)
        self.variant = variant
        self.image_shape = tuple(input_shape)

    def get_config(self):
        """The architecture only (``weights`` is left out: a saved model holds its weights)."""
        return {**super().get_config(), "variant": self.variant, "input_shape": self.image_shape}
