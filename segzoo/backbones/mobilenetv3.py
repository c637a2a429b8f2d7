"""MobileNetV3 Small and Large feature pyramids over ``keras.applications``."""

import keras
# The URLs and md5 hashes of keras.applications' weight files (no public name).
from segzoo.keras_internals import mobilenet_v3 as _keras_mobilenet_v3

from segzoo.backbones.applications import (MODEL_OUTPUT, InputOf, WeightsFile, resolve_weights,
                                           tap_features)
from segzoo.backbones.base import PYRAMID_STRIDES, Backbone, check_weights_argument

#: ``variant -> (keras.applications builder, {level: (tap, channels at alpha 1.0)})``.
#: Taps are the last block of each stride; P5 is the model's own output, the
#: 1x1 convolution to 576 / 960 channels after the last block (as in timm's and
#: torchvision's MobileNetV3 pyramids). Where the wanted tensor comes from a
#: layer with a generated name (Small's stem activation), the tap is the input
#: of the hand-named layer that follows it; Large's P1 is tapped the same way
#: because its first block has no residual addition when ``alpha`` changes its width.
MOBILENETV3_VARIANTS = {
    "small": (keras.applications.MobileNetV3Small, {
        "P1": (InputOf("expanded_conv_depthwise_pad"), 16),
        "P2": ("expanded_conv_project_bn", 16),
        "P3": ("expanded_conv_2_add", 24),
        "P4": ("expanded_conv_7_add", 48),
        "P5": (MODEL_OUTPUT, 576),
    }),
    "large": (keras.applications.MobileNetV3Large, {
        "P1": (InputOf("expanded_conv_1_expand"), 16),
        "P2": ("expanded_conv_2_add", 24),
        "P3": ("expanded_conv_5_add", 40),
        "P4": ("expanded_conv_11_add", 112),
        "P5": (MODEL_OUTPUT, 960),
    }),
}


def imagenet_weights_file(variant, alpha, minimalistic):
    """The notop ImageNet file ``keras.applications`` downloads for this configuration, or None."""
    model_name = f"{variant}{'_minimalistic' if minimalistic else ''}_224_{alpha}_float"
    if model_name not in _keras_mobilenet_v3.WEIGHTS_HASHES:
        return None
    file_name = f"weights_mobilenet_v3_{model_name}_no_top_v2.h5"
    return WeightsFile(file_name, _keras_mobilenet_v3.BASE_WEIGHT_PATH + file_name,
                       _keras_mobilenet_v3.WEIGHTS_HASHES[model_name][1])


@keras.saving.register_keras_serializable(package="segzoo")
class MobileNetV3Backbone(Backbone):
    """MobileNetV3 (Howard et al. 2019) from ``keras.applications`` as a feature pyramid.

    Outputs ``{"P1": ..., "P5": ...}`` at strides 2, 4, 8, 16, 32, tapped as
    :data:`MOBILENETV3_VARIANTS` says (channels there are at ``alpha=1.0``).

    Input: float RGB ``(B, H, W, 3)`` with values 0..255, H and W multiples of
    32. ``keras.applications``' ``include_preprocessing=True`` maps it to
    ``x / 127.5 - 1`` (-1..1), what its ImageNet weights expect.

    Args:
        variant: "small" or "large".
        alpha: width multiplier. ImageNet weights exist for 0.75 and 1.0, and
            for 1.0 only when ``minimalistic``.
        minimalistic: the variant without squeeze-excitation, hard-swish and
            5x5 convolutions (faster on some accelerators, less accurate).
        input_shape: ``(H, W, 3)``, ``None`` for sizes chosen at run time.
        weights: ``None`` (random initialisation), ``"imagenet"`` (the
            ``keras.applications`` notop file, downloaded to Keras's cache on
            first use; offline, an error says where to place it by hand), or
            the path of a ``keras.applications`` notop ``.h5`` file of this configuration.
            ``weights`` is not part of the config: a saved model holds its own
            weights and never downloads on loading.
    """

    def __init__(self, variant="large", alpha=1.0, minimalistic=False, input_shape=(None, None, 3),
                 weights=None, name=None, **kwargs):
        if variant not in MOBILENETV3_VARIANTS:
            raise ValueError(f"Unknown MobileNetV3 variant {variant!r}; valid: "
                             f"{', '.join(MOBILENETV3_VARIANTS)}.")
        alpha, minimalistic = float(alpha), bool(minimalistic)
        name = name or f"mobilenetv3{variant}_backbone"
        check_weights_argument(weights, name)
        builder, taps = MOBILENETV3_VARIANTS[variant]
        model = builder(
            input_shape=tuple(input_shape), alpha=alpha, minimalistic=minimalistic,
            include_top=False, include_preprocessing=True,
            weights=resolve_weights(weights, imagenet_weights_file(variant, alpha, minimalistic),
                                    name))
        features = tap_features(model, {level: tap for level, (tap, _) in taps.items()})
        super().__init__(model.input, features, PYRAMID_STRIDES, name=name, **kwargs)
        self.variant = variant
        self.alpha = alpha
        self.minimalistic = minimalistic
        self.image_shape = tuple(input_shape)

    def get_config(self):
        """The architecture only (``weights`` is left out: a saved model holds its weights)."""
        return {**super().get_config(), "variant": self.variant, "alpha": self.alpha,
                "minimalistic": self.minimalistic, "input_shape": self.image_shape}
