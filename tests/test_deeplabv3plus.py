"""DeepLabV3+ ASPP and head: shapes, output stride, configuration, saving, clean export."""

import collections

import keras
import numpy as np
import pytest

from harness import (TinyBackbone, assert_config_roundtrip, assert_keras_file_roundtrip,
                     random_images)
from segzoo import presets
from segzoo.heads.deeplabv3plus import ASPP, DeepLabV3PlusHead
from segzoo.models import SegmentationModel


def feature_dict(batch=2, height=64, width=96, channels=None, seed=0):
    """Random features P2 (stride 4) and P5 (stride 32) of a ``height x width`` image."""
    channels = channels or {"P2": 24, "P5": 40}
    rng = np.random.default_rng(seed)
    return {level: rng.normal(size=(batch, height // s, width // s, channels[level])).astype("float32")
            for level, s in (("P2", 4), ("P5", 32))}


@pytest.mark.parametrize("rates, separable", [((3, 6, 9), False), ((1, 2), True), ((), False)])
def test_aspp_keeps_the_map_size_and_sets_the_channels(rates, separable):
    aspp = ASPP(16, rates, separable=separable)
    x = np.random.default_rng(0).normal(size=(2, 6, 10, 12)).astype("float32")
    y = keras.ops.convert_to_numpy(aspp(x))
    assert y.shape == (2, 6, 10, 16) and np.all(np.isfinite(y))
    assert aspp.compute_output_shape((2, 6, 10, 12)) == (2, 6, 10, 16)
    # 1x1 branch, one branch per rate, image pooling, projection.
    convolutions = [layer for layer in aspp._flatten_layers(include_self=False)
                    if isinstance(layer, keras.layers.Conv2D)]
    depthwise = [layer for layer in aspp._flatten_layers(include_self=False)
                 if isinstance(layer, keras.layers.DepthwiseConv2D)]
    assert len(depthwise) == (len(rates) if separable else 0)
    assert sorted(c.dilation_rate[0] for c in convolutions + depthwise
                  if c.kernel_size == (3, 3)) == sorted(rates)


def test_aspp_image_pooling_branch_sees_the_whole_map():
    """A change far from a pixel reaches it through image pooling (rates 1 and a 1x1 map region)."""
    aspp = ASPP(8, rates=(1,), dropout=0.0)
    x = np.zeros((1, 16, 16, 4), "float32")
    changed = x.copy()
    changed[0, 15, 15] = 50.0
    before = keras.ops.convert_to_numpy(aspp(x))[0, 0, 0]
    after = keras.ops.convert_to_numpy(aspp(changed))[0, 0, 0]
    assert not np.allclose(before, after)


@pytest.mark.parametrize("separable", [False, True])
def test_head_gives_logits_at_the_low_level_stride(separable):
    head = DeepLabV3PlusHead(5, aspp_channels=16, decoder_channels=16, low_level_channels=8,
                             separable=separable)
    features = feature_dict()
    y = keras.ops.convert_to_numpy(head(features))
    assert y.shape == (2, 16, 24, 5) and np.all(np.isfinite(y))
    shapes = {level: value.shape for level, value in features.items()}
    assert head.compute_output_shape(shapes) == (2, 16, 24, 5)


def test_head_reads_the_levels_it_is_given():
    head = DeepLabV3PlusHead(3, high_level="P3", low_level="P1", aspp_channels=8,
                             decoder_channels=8, rates=(1, 2))
    model = SegmentationModel(TinyBackbone(), head)
    features = model.backbone(random_images(1, 32, 48))
    assert head(features).shape == (1, 16, 24, 3)  # P1: stride 2
    assert model(random_images(1, 32, 48)).shape == (1, 32, 48, 3)


def test_head_separable_is_lighter():
    shapes = {"P2": (None, 16, 24, 24), "P5": (None, 2, 3, 40)}
    full, separable = DeepLabV3PlusHead(2), DeepLabV3PlusHead(2, separable=True)
    full.build(shapes)
    separable.build(shapes)
    assert separable.count_params() < full.count_params() / 3


def test_bad_levels_and_rates_are_refused():
    with pytest.raises(ValueError, match=r"no features \['P4'\].*Set high_level"):
        DeepLabV3PlusHead(2, high_level="P4").build({"P2": (None, 8, 8, 4), "P5": (None, 1, 1, 4)})
    with pytest.raises(ValueError, match="positive integers"):
        ASPP(8, rates=(0, 6))
    with pytest.raises(ValueError, match="num_classes"):
        DeepLabV3PlusHead(0)


def test_config_roundtrips():
    aspp = assert_config_roundtrip(ASPP(32, (2, 4), separable=True, dropout=0.2,
                                        activation="swish"))
    assert aspp.rates == (2, 4) and aspp.separable
    head = assert_config_roundtrip(DeepLabV3PlusHead(
        4, high_level="P4", low_level="P3", aspp_channels=64, rates=(6, 12, 18),
        low_level_channels=32, decoder_channels=96, dropout=0.0, separable=True,
        activation="hard_swish"))
    assert head.rates == (6, 12, 18) and head.decoder_channels == 96


def test_keras_file_roundtrip(tmp_path):
    head = DeepLabV3PlusHead(3, high_level="P3", low_level="P2", aspp_channels=8,
                             decoder_channels=8, rates=(1, 2), separable=True)
    model = SegmentationModel(TinyBackbone(), head)
    loaded = assert_keras_file_roundtrip(model, random_images(1, 32, 32), tmp_path)
    assert loaded.head.get_config() == head.get_config()


def run_litert(path, images):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.slow
def test_fixed_size_head_exports_cleanly_to_litert_and_onnx(tmp_path):
    """Image pooling's broadcast becomes a resize of static size: no shape arithmetic in the graph."""
    import onnx
    import onnxruntime

    head = DeepLabV3PlusHead(3, high_level="P3", low_level="P1", aspp_channels=8,
                             decoder_channels=8, rates=(1, 2))
    model = SegmentationModel(TinyBackbone((64, 96, 3)), head)
    images = random_images(1, 64, 96)
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    assert np.abs(expected).max() > 0.1

    model.export(str(tmp_path / "model.tflite"), format="litert", verbose=False)
    np.testing.assert_allclose(run_litert(str(tmp_path / "model.tflite"), images), expected,
                               atol=1e-4, rtol=1e-4)

    model.export(str(tmp_path / "model.onnx"), format="onnx", verbose=False)
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    operators = collections.Counter(node.op_type for node in graph.node)
    assert operators["Resize"] >= 2 and operators["Shape"] == 0, operators
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    actual = session.run(None, {session.get_inputs()[0].name: images})[0]
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_fixed_size_preset_exports_to_litert_with_the_same_logits(tmp_path):
    model = presets.from_name("deeplabv3plus_mobilenetv3small", num_classes=3,
                              input_shape=(96, 128, 3))
    images = random_images(1, 96, 128)
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    model.export(str(tmp_path / "model.tflite"), format="litert", verbose=False)
    actual = run_litert(str(tmp_path / "model.tflite"), images)
    # Randomly initialised, the logits are small: compare relative to their scale.
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(actual / scale, expected / scale, atol=1e-4)
