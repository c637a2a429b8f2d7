"""Resizing one tensor to the spatial size of another."""

import keras
from keras import ops

# keras.ops.image.resize validates its size in Python (size > 0), which a
# symbolic size cannot answer inside a TensorFlow graph; the backend function
# it calls does no such check. Only unknown sizes take this path.
from segzoo.keras_internals import backend_image


@keras.saving.register_keras_serializable(package="segzoo")
class ResizeLike(keras.layers.Layer):
    """Resizes ``x`` to the height and width of ``reference``: ``layer([x, reference])``.

    Uses the static size when it is known (what ONNX and LiteRT exporters want:
    a resize of fixed output size, no shape arithmetic inside the graph) and the
    dynamic size otherwise. Bilinear resizing uses half-pixel centres, PyTorch's
    ``align_corners=False``, without antialiasing.

    Args:
        interpolation: "bilinear" or "nearest".

    Shape: ``[(B, h, w, C), (B, H, W, ...)] -> (B, H, W, C)``.
    """

    def __init__(self, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}.")
        self.interpolation = interpolation

    def call(self, inputs):
        x, reference = inputs
        x = ops.cast(x, self.compute_dtype)
        static = reference.shape[1:3]
        if all(isinstance(d, int) for d in static):
            if tuple(x.shape[1:3]) == tuple(static):
                return x
            return ops.image.resize(x, tuple(static), interpolation=self.interpolation, antialias=False)
        resized = backend_image.resize(x, ops.shape(reference)[1:3], interpolation=self.interpolation,
                                        antialias=False)
        return ops.cast(resized, self.compute_dtype)

    def compute_output_shape(self, input_shapes):
        x_shape, reference_shape = input_shapes
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(interpolation=self.interpolation)
        return config
