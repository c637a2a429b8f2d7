"""segzoo.layers: shapes, arithmetic, serialisation."""

import keras
import numpy as np
import pytest

from harness import assert_config_roundtrip, assert_keras_file_roundtrip, random_images
from segzoo.layers import ConvBNAct, ImageNormalization, ResizeLike, SeparableConvBNAct


@pytest.mark.parametrize("layer_cls, kwargs, expected_shape", [
    (ConvBNAct, dict(filters=8, kernel_size=3, strides=2), (2, 16, 16, 8)),
    (ConvBNAct, dict(filters=4, kernel_size=1, activation=None), (2, 32, 32, 4)),
    (SeparableConvBNAct, dict(filters=8, dilation_rate=2), (2, 32, 32, 8)),
])
def test_conv_blocks_shape_and_roundtrip(layer_cls, kwargs, expected_shape, tmp_path):
    layer = layer_cls(**kwargs)
    x = random_images(2, 32, 32)
    assert layer(x).shape == expected_shape
    assert layer.compute_output_shape(x.shape) == expected_shape
    assert_config_roundtrip(layer)
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, layer_cls(**kwargs)(inputs))
    assert_keras_file_roundtrip(model, x, tmp_path)


def test_conv_bn_act_relu_output_is_non_negative():
    y = keras.ops.convert_to_numpy(ConvBNAct(8)(random_images(1, 16, 16)))
    assert y.min() >= 0 and y.max() > 0


def test_image_normalization_matches_formula():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x = random_images(1, 8, 8)
    y = keras.ops.convert_to_numpy(ImageNormalization(mean, std)(x))
    np.testing.assert_allclose(y, (x / 255.0 - np.array(mean)) / np.array(std), rtol=1e-5, atol=1e-5)
    assert_config_roundtrip(ImageNormalization(mean, std))


def test_image_normalization_rejects_bad_std():
    with pytest.raises(ValueError, match="std"):
        ImageNormalization(std=(0.2, 0.0, 0.3))


def test_resize_like_matches_reference_size_and_half_pixel_centres():
    x = np.arange(4, dtype="float32").reshape(1, 2, 2, 1)
    reference = np.zeros((1, 4, 4, 3), "float32")
    y = keras.ops.convert_to_numpy(ResizeLike()([x, reference]))
    assert y.shape == (1, 4, 4, 1)
    # Half-pixel centres (PyTorch align_corners=False): the first output row,
    # at source coordinate -0.25, clamps to row 0; row 1 (0.25) is 3/4 row 0 + 1/4 row 1.
    np.testing.assert_allclose(y[0, :, 0, 0], [0.0, 0.5, 1.5, 2.0], atol=1e-6)


def test_resize_like_nearest_keeps_values_and_handles_dynamic_shapes():
    labels = np.array([[[0, 3], [7, 1]]], "float32")[..., None]
    inputs = keras.Input((None, None, 1)), keras.Input((None, None, 3))
    model = keras.Model(inputs, ResizeLike("nearest")(list(inputs)))
    y = keras.ops.convert_to_numpy(model([labels, np.zeros((1, 6, 4, 3), "float32")]))
    assert y.shape == (1, 6, 4, 1)
    assert set(np.unique(y)) == {0, 1, 3, 7}


def test_resize_like_rejects_unknown_interpolation():
    with pytest.raises(ValueError, match="interpolation"):
        ResizeLike("bicubic")


def test_resize_like_traces_with_unknown_sizes_in_a_graph():
    """A model of unknown height and width compiles (tf.function / jit) and resizes correctly."""
    from harness import TinyBackbone, TinyHead
    from segzoo.evaluation import compiled_forward
    from segzoo.models import SegmentationModel

    model = SegmentationModel(TinyBackbone(), TinyHead(2))
    forward = compiled_forward(model)
    for height, width in ((32, 48), (40, 24)):
        x = random_images(1, height, width)
        y = keras.ops.convert_to_numpy(forward(x))
        assert y.shape == (1, height, width, 2)
        np.testing.assert_allclose(y, keras.ops.convert_to_numpy(model(x)), atol=1e-4, rtol=1e-5)
