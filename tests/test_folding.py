"""Batch-norm folding: same outputs, fewer operations, the right pairs and only those."""

import keras
import numpy as np
import pytest
from harness import random_images

from segzoo import presets
from segzoo.evaluation import compiled_forward
from segzoo.folding import FoldedBatchNormalization, batch_norm_pairs, fold_batch_norm


def _set_statistics(model, seed=0):
    """Give every batch norm non-trivial statistics, so that folding has something to fold."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0.0, 0.1, shape))
            layer.moving_variance.assign(rng.uniform(0.8, 1.2, shape))
            layer.gamma.assign(rng.uniform(0.8, 1.2, shape))
            layer.beta.assign(rng.normal(0.0, 0.1, shape))
    return model


def _batch_norms(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]


def _outputs(model, images):
    return keras.ops.convert_to_numpy(model(images, training=False))


# Folded / all batch norms per family: the DDRNet trunk folds all of its own; its heads
# put BN-ReLU before each convolution (15 in DAPPM and the two heads), which cannot fold.
FAMILIES = {"ddrnet23_slim": (42, 57), "deeplabv3plus_mobilenetv3small": (48, 48),
            "deeplabv3plus_efficientnetb0_lite": (62, 62)}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_folded_preset_gives_the_same_logits(name):
    model = _set_statistics(presets.from_name(name, num_classes=3, input_shape=(64, 96, 3)))
    images = random_images(2, 64, 96)
    expected = _outputs(model, images)
    folded = fold_batch_norm(model)
    assert (folded.folded_batch_norms, len(_batch_norms(model))) == FAMILIES[name]
    np.testing.assert_allclose(_outputs(folded, images), expected, rtol=0,
                               atol=1e-5 * max(1.0, np.abs(expected).max()))
    # The original is untouched: same outputs, plain batch norms, still trainable.
    np.testing.assert_array_equal(_outputs(model, images), expected)
    assert all(type(bn) is keras.layers.BatchNormalization for bn in _batch_norms(model))
    assert model.trainable and not folded.trainable
    assert sum(isinstance(bn, FoldedBatchNormalization) for bn in _batch_norms(folded)) == FAMILIES[name][0]


def _functional(reuse_conv_output=False, conv_output_is_output=False, use_bias=False):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=use_bias, name="conv")(inputs)
    y = keras.layers.BatchNormalization(name="bn")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False, name="dw")(y)
    y = keras.layers.BatchNormalization(name="dw_bn")(y)
    y = keras.layers.ReLU()(y)
    if reuse_conv_output:
        y = keras.layers.Concatenate()([y, x])
    outputs = [y, x] if conv_output_is_output else y
    return _set_statistics(keras.Model(inputs, outputs))


@pytest.mark.parametrize("use_bias", [False, True])
def test_folds_conv_and_depthwise_pairs_with_or_without_bias(use_bias):
    model = _functional(use_bias=use_bias)
    if use_bias:
        model.get_layer("conv").bias.assign(np.linspace(-1, 1, 8))
    images = random_images(2, 16, 16)
    expected = _outputs(model, images)
    assert {(c.name, b.name) for c, b in batch_norm_pairs(model)} == {("conv", "bn"), ("dw", "dw_bn")}
    folded = fold_batch_norm(model)
    np.testing.assert_allclose(_outputs(folded, images), expected, atol=1e-4, rtol=1e-5)


def test_a_convolution_output_read_elsewhere_is_not_folded():
    """Folding a convolution that another layer (or the caller) also reads would change what it reads."""
    for model in (_functional(reuse_conv_output=True), _functional(conv_output_is_output=True)):
        assert [(c.name, b.name) for c, b in batch_norm_pairs(model)] == [("dw", "dw_bn")]
        images = random_images(1, 16, 16)
        for actual, expected in zip(keras.tree.flatten(fold_batch_norm(model)(images)),
                                    keras.tree.flatten(model(images))):
            np.testing.assert_allclose(keras.ops.convert_to_numpy(actual), keras.ops.convert_to_numpy(expected),
                                       atol=1e-4, rtol=1e-5)


def test_a_folded_model_saves_and_loads_with_the_same_outputs(tmp_path):
    """The folded statistics are the identity, so the file means the same to a plain batch norm too."""
    folded = fold_batch_norm(_functional())
    images = random_images(1, 16, 16)
    path = str(tmp_path / "folded.keras")
    folded.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert any(isinstance(layer, FoldedBatchNormalization) for layer in loaded.layers)
    np.testing.assert_allclose(_outputs(loaded, images), _outputs(folded, images), atol=1e-6, rtol=0)
    for layer in _batch_norms(folded):  # a plain batch norm with these weights computes x + beta too
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.gamma), 1.0)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.moving_mean), 0.0)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_variance) + layer.epsilon, 1.0, rtol=1e-7)


def test_in_place_folding_and_compiled_forward():
    model = _functional()
    images = random_images(1, 16, 16)
    expected = _outputs(model, images)
    unfolded = keras.ops.convert_to_numpy(compiled_forward(model, fold_batch_norm=False)(images))
    folded_forward = keras.ops.convert_to_numpy(compiled_forward(model)(images))
    np.testing.assert_allclose(unfolded, expected, atol=1e-6)
    np.testing.assert_allclose(folded_forward, expected, atol=1e-4, rtol=1e-5)
    assert all(type(bn) is keras.layers.BatchNormalization for bn in _batch_norms(model))
    same = fold_batch_norm(model, copy=False)
    assert same is model and model.folded_batch_norms == 2
    assert all(isinstance(bn, FoldedBatchNormalization) for bn in _batch_norms(model))
    np.testing.assert_allclose(_outputs(model, images), expected, atol=1e-4, rtol=1e-5)
