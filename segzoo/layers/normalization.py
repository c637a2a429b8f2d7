"""Input normalisation inside the model, so that nothing outside a model normalises."""

import keras
from keras import ops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="segzoo")
class ImageNormalization(keras.layers.Layer):
    """Maps RGB values ``0..input_scale`` to ``(x / input_scale - mean) / std`` per channel.

    One multiply-add per value, which converters fold into the first convolution.

    Args:
        mean: per-channel mean of the 0..1 image (ImageNet's by default).
        std: per-channel standard deviation of the 0..1 image.
        input_scale: the value of white in the input (255 for segzoo models).

    Shape: ``(B, H, W, 3) -> (B, H, W, 3)``.
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, input_scale=255.0, **kwargs):
        super().__init__(**kwargs)
        if len(mean) != len(std) or min(std) <= 0:
            raise ValueError(f"mean {mean} and std {std} need the same length and std > 0.")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.input_scale = float(input_scale)

    def call(self, inputs):
        scale = [1.0 / (self.input_scale * s) for s in self.std]
        offset = [-m / s for m, s in zip(self.mean, self.std)]
        x = ops.cast(inputs, self.compute_dtype)
        return x * ops.convert_to_tensor(scale, self.compute_dtype) + ops.convert_to_tensor(
            offset, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mean=list(self.mean), std=list(self.std), input_scale=self.input_scale)
        return config
