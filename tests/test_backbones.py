"""EfficientNet and MobileNetV3 backbones: pyramid taps, input scaling, weights, saving."""

import functools
import os
import re

import keras
import numpy as np
import pytest

from harness import random_images
from segzoo.backbones.applications import MODEL_OUTPUT, InputOf
from segzoo.backbones.efficientnet import EFFICIENTNET_VARIANTS, EfficientNetBackbone
from segzoo.backbones.mobilenetv3 import (MOBILENETV3_VARIANTS, MobileNetV3Backbone,
                                          imagenet_weights_file)
from segzoo.layers.normalization import IMAGENET_MEAN, IMAGENET_STD

STRIDES = {"P1": 2, "P2": 4, "P3": 8, "P4": 16, "P5": 32}
# Names Keras generates: a layer class in snake case and a counter (activation_19, add_34).
GENERATED_NAME = re.compile(r"^(activation|add|re_lu|multiply|conv2d|batch_normalization|"
                            r"rescaling|normalization|dropout)(_\d+)?$")


@functools.lru_cache(maxsize=None)
def mobilenetv3_small():
    """One MobileNetV3-Small backbone shared by the tests that only read it."""
    return MobileNetV3Backbone("small")


def stated_taps():
    """(family, variant, taps with channels) for every variant in the tables."""
    rows = [("efficientnet", name, spec.taps) for name, spec in EFFICIENTNET_VARIANTS.items()]
    rows += [("mobilenetv3", name, taps) for name, (_, taps) in MOBILENETV3_VARIANTS.items()]
    return rows


def build(family, variant, **kwargs):
    cls = EfficientNetBackbone if family == "efficientnet" else MobileNetV3Backbone
    return cls(variant, **kwargs)


def output_shapes(backbone, height, width):
    """Feature shapes for one image of ``height x width``, computed symbolically."""
    specs = backbone.compute_output_spec(keras.KerasTensor((1, height, width, 3)))
    return {level: tuple(spec.shape) for level, spec in specs.items()}


def to_numpy(features):
    return {level: keras.ops.convert_to_numpy(value) for level, value in features.items()}


@pytest.mark.parametrize("family, variant, taps", stated_taps(),
                         ids=[f"{f}-{v}" for f, v, _ in stated_taps()])
def test_every_tap_has_its_stated_stride_and_channels(family, variant, taps):
    for tap, _ in taps.values():
        if tap != MODEL_OUTPUT:
            name = tap.layer if isinstance(tap, InputOf) else tap
            assert not GENERATED_NAME.match(name), f"{variant}: {name} is a generated layer name"
    backbone = build(family, variant)
    assert backbone.feature_strides == STRIDES
    for height, width in ((224, 224), (256, 320)):
        shapes = output_shapes(backbone, height, width)
        assert set(shapes) == set(taps)
        for level, (tap, channels) in taps.items():
            stride = STRIDES[level]
            assert shapes[level] == (1, height // stride, width // stride, channels), (level, tap)


@pytest.mark.parametrize("variant", list(MOBILENETV3_VARIANTS))
@pytest.mark.parametrize("alpha, minimalistic", [(0.75, False), (1.0, True), (0.5, False)])
def test_mobilenetv3_options_keep_the_strides(variant, alpha, minimalistic):
    backbone = MobileNetV3Backbone(variant, alpha=alpha, minimalistic=minimalistic)
    shapes = output_shapes(backbone, 64, 96)
    assert {level: (64 // s[1], 96 // s[2]) for level, s in shapes.items()} == {
        level: (stride, stride) for level, stride in STRIDES.items()}
    if alpha != 1.0:  # a width multiplier narrows the deep levels
        assert shapes["P5"][-1] < MOBILENETV3_VARIANTS[variant][1]["P5"][1]


def first_convolution_input(backbone, layer_name, value):
    """What the first convolution sees for a constant image of ``value``: the input of ``layer_name``,
    or the output of the backbone's own ``imagenet_normalization`` layer when it has one."""
    names = [layer.name for layer in backbone.layers]
    tensor = (backbone.get_layer("imagenet_normalization").output if "imagenet_normalization" in names
              else backbone.get_layer(layer_name).input)
    probe = keras.Model(backbone.input, tensor)
    image = np.full((1, 64, 64, 3), value, "float32")
    return keras.ops.convert_to_numpy(probe(image))[0, 0, 0]


IMAGENET = (np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD))


@pytest.mark.parametrize("family, variant, first_layer, expected_black, expected_white", [
    # V1: segzoo's ImageNormalization with ImageNet's statistics, in place of keras.applications' layers.
    ("efficientnet", "b0", "stem_conv_pad", -IMAGENET[0] / IMAGENET[1], (1 - IMAGENET[0]) / IMAGENET[1]),
    # V2-B*: the same ImageNet normalisation.
    ("efficientnet", "v2b0", "stem_conv", -IMAGENET[0] / IMAGENET[1], (1 - IMAGENET[0]) / IMAGENET[1]),
    # V2-S/M: include_preprocessing's x / 128 - 1.
    ("efficientnet", "v2s", "stem_conv", [-1.0] * 3, [255 / 128 - 1] * 3),
    # MobileNetV3: x / 127.5 - 1.
    ("mobilenetv3", "small", "conv", [-1.0] * 3, [1.0] * 3),
])
def test_backbones_normalise_0_255_input_as_their_weights_expect(family, variant, first_layer,
                                                                 expected_black, expected_white):
    backbone = mobilenetv3_small() if variant == "small" else build(family, variant)
    np.testing.assert_allclose(first_convolution_input(backbone, first_layer, 0.0),
                               expected_black, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(first_convolution_input(backbone, first_layer, 255.0),
                               expected_white, rtol=1e-5, atol=1e-5)


def save_notop_h5(application, path):
    """Write a keras.applications notop model's weights as a legacy .h5 file, like Keras's own files."""
    model = application(include_top=False, weights=None, input_shape=(64, 64, 3))
    model.save(path)  # a ".h5" name writes the legacy HDF5 format
    return model


def test_weights_path_loads_a_mobilenetv3_notop_file(tmp_path):
    path = str(tmp_path / "notop.h5")
    reference = save_notop_h5(keras.applications.MobileNetV3Small, path)
    backbone = MobileNetV3Backbone("small", input_shape=(64, 64, 3), weights=path)
    x = random_images(1, 64, 64)
    expected = keras.ops.convert_to_numpy(reference(x))
    assert np.std(expected) > 0
    np.testing.assert_array_equal(to_numpy(backbone(x))["P5"], expected)


def test_weights_path_loads_an_efficientnet_v1_notop_file_and_keeps_imagenet_normalisation(tmp_path):
    path = str(tmp_path / "notop.h5")
    reference = save_notop_h5(keras.applications.EfficientNetB0, path)  # normalisation 0 / 1 in the file
    backbone = EfficientNetBackbone("b0", input_shape=(64, 64, 3), weights=path)
    trunk = backbone.get_layer("efficientnetb0_backbone_trunk")
    for name in ("stem_conv", "block4a_se_reduce", "block7a_project_conv"):
        for actual, expected in zip(trunk.get_layer(name).get_weights(),
                                    reference.get_layer(name).get_weights()):
            np.testing.assert_array_equal(actual, expected)
    np.testing.assert_allclose(first_convolution_input(backbone, "stem_conv_pad", 0.0),
                               -IMAGENET[0] / IMAGENET[1], rtol=1e-5)


@pytest.fixture
def offline(monkeypatch):
    """keras.utils.get_file fails as it does without internet."""
    def get_file(fname, origin, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure "
                        f"in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", get_file)


@pytest.mark.parametrize("build_backbone, file_name", [
    (lambda: EfficientNetBackbone("b0", weights="imagenet"), "efficientnetb0_notop.h5"),
    (lambda: EfficientNetBackbone("v2s", weights="imagenet"), "efficientnetv2-s_notop.h5"),
    (lambda: MobileNetV3Backbone("small", weights="imagenet"),
     "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
], ids=["b0", "v2s", "mobilenetv3small"])
def test_offline_imagenet_says_which_file_and_where_to_put_it(offline, build_backbone, file_name):
    with pytest.raises(OSError) as error:
        build_backbone()
    message = str(error.value)
    assert file_name in message and os.path.join("models", file_name) in message
    assert "Temporary failure in name resolution" in message and "weights=None" in message


@pytest.mark.parametrize("application, expected", [
    (keras.applications.EfficientNetB0, EFFICIENTNET_VARIANTS["b0"].weights_file()),
    (keras.applications.EfficientNetV2B0, EFFICIENTNET_VARIANTS["v2b0"].weights_file()),
    (keras.applications.MobileNetV3Small, imagenet_weights_file("small", 1.0, False)),
], ids=["b0", "v2b0", "mobilenetv3small"])
def test_imagenet_file_is_the_one_keras_applications_downloads(monkeypatch, application, expected):
    from keras.src.utils import file_utils

    asked = {}

    def get_file(fname, origin, file_hash=None, **kwargs):
        asked.update(file_name=fname, origin=origin, file_hash=file_hash)
        raise ConnectionError("no network in tests")

    monkeypatch.setattr(file_utils, "get_file", get_file)
    with pytest.raises(ConnectionError):
        application(include_top=False, weights="imagenet", input_shape=(224, 224, 3))
    assert asked == {"file_name": expected.file_name, "origin": expected.origin,
                     "file_hash": expected.file_hash}


def test_bad_arguments_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="valid: b0, b1"):
        EfficientNetBackbone("b9")
    with pytest.raises(ValueError, match="valid: small, large"):
        MobileNetV3Backbone("medium")
    with pytest.raises(ValueError, match="existing weights file"):
        MobileNetV3Backbone("small", weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="no ImageNet weights"):
        MobileNetV3Backbone("small", alpha=0.5, weights="imagenet")


def test_config_is_the_architecture_without_weights():
    backbone = MobileNetV3Backbone("large", alpha=0.75, minimalistic=True, input_shape=(64, 96, 3))
    config = backbone.get_config()
    assert "weights" not in config
    assert config == {"name": "mobilenetv3large_backbone", "trainable": True, "variant": "large",
                      "alpha": 0.75, "minimalistic": True, "input_shape": (64, 96, 3)}
    clone = MobileNetV3Backbone.from_config(config)
    assert clone.get_config() == config and clone.count_params() == backbone.count_params()
    assert "weights" not in EfficientNetBackbone("b0").get_config()


def test_imagenet_backbone_reloads_from_keras_file_without_downloading(tmp_path, monkeypatch):
    cached = str(tmp_path / "cached_notop.h5")
    save_notop_h5(keras.applications.MobileNetV3Small, cached)
    monkeypatch.setattr(keras.utils, "get_file", lambda fname, origin, **kwargs: cached)
    backbone = MobileNetV3Backbone("small", weights="imagenet")
    path = str(tmp_path / "backbone.keras")
    backbone.save(path)

    def no_download(*args, **kwargs):
        raise AssertionError("loading a saved backbone must not download weights")

    monkeypatch.setattr(keras.utils, "get_file", no_download)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is MobileNetV3Backbone and loaded.feature_strides == STRIDES
    x = random_images(1, 64, 64)
    expected, actual = to_numpy(backbone(x)), to_numpy(loaded(x))
    for level in STRIDES:
        np.testing.assert_array_equal(actual[level], expected[level])


def test_efficientnet_keras_file_roundtrip(tmp_path):
    backbone = EfficientNetBackbone("b0")
    path = str(tmp_path / "backbone.keras")
    backbone.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is EfficientNetBackbone and loaded.get_config() == backbone.get_config()
    x = random_images(1, 64, 64)
    expected, actual = to_numpy(backbone(x)), to_numpy(loaded(x))
    for level in STRIDES:
        np.testing.assert_allclose(actual[level], expected[level], atol=1e-6, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["b0", "v2b0"])
def test_normalised_efficientnets_export_to_onnx_with_one_input(variant, tmp_path):
    """keras.layers.Normalization's statistics become unfed ONNX inputs; segzoo's normalisation does not."""
    import onnxruntime

    inputs = keras.Input((64, 64, 3))
    model = keras.Model(inputs, build("efficientnet", variant)(inputs)["P5"])
    image = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(image))
    model.export(str(tmp_path / "m.onnx"), format="onnx", verbose=False)
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    assert len(session.get_inputs()) == 1
    actual = session.run(None, {session.get_inputs()[0].name: image})[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-3)
