"""DDRNet: trunk, heads and presets against the paper's sizes and costs, branch shapes, layer names."""

import functools

import keras
import numpy as np
import pytest

from harness import assert_config_roundtrip, random_images
from segzoo import presets
from segzoo.backbones.ddrnet import DDRNET_VARIANTS, DDRNetBackbone, keras_name
from segzoo.heads.ddrnet import DAPPM, DDRNetHead, DDRNetSegmentHead
from segzoo.utils import count_flops, count_params

VARIANTS = list(DDRNET_VARIANTS)

# Paper (Hong et al. 2021) and ddrnet.md: parameters with 19 classes, no auxiliary head, and
# multiply-adds (the paper's "GFLOPs") per (height, width).
PAPER = {
    "ddrnet23_slim": (5.70e6, {(1024, 2048): 36.3, (512, 512): 4.5, (512, 1024): 9.1, (720, 960): 11.9}),
    "ddrnet23": (20.15e6, {(1024, 2048): 143.1, (512, 512): 17.9, (512, 1024): 35.8, (720, 960): 47.0}),
    "ddrnet39": (32.36e6, {(1024, 2048): 281.2}),
}


@functools.lru_cache(maxsize=None)
def cityscapes_model(name):
    return presets.from_name(name, num_classes=19)


def learnable_parameters(layer):
    """PyTorch's count: trainable weights only (batch-norm running statistics are buffers there)."""
    return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


@pytest.mark.parametrize("name", VARIANTS)
def test_parameters_and_multiply_adds_match_the_paper(name):
    model = cityscapes_model(name)
    params, gmacs = PAPER[name]
    learnable = learnable_parameters(model) - learnable_parameters(model.aux_head)
    assert learnable == pytest.approx(params, rel=0.001)
    # segzoo's count also holds the batch-norm moving statistics: 0.1-0.3% more.
    assert count_params(model) == pytest.approx(params, rel=0.01)
    for (height, width), expected in gmacs.items():
        assert count_flops(model, (height, width, 3)) / 1e9 == pytest.approx(expected, rel=0.02), (height, width)


def test_auxiliary_head_adds_the_papers_parameters():
    model = cityscapes_model("ddrnet23_slim")
    assert learnable_parameters(model) == pytest.approx(5.73e6, rel=0.001)
    assert count_params(model) + model.aux_head.count_params() == pytest.approx(5.73e6, rel=0.01)
    assert count_params(model) == model.count_params() - model.aux_head.count_params()


@pytest.mark.parametrize("name", VARIANTS)
def test_branch_shapes_and_strides(name):
    backbone = cityscapes_model(name).backbone
    planes, highres = DDRNET_VARIANTS[name]["planes"], DDRNET_VARIANTS[name]["highres_planes"]
    # 72x88 is a multiple of 8 but not of 16: every stride rounds up.
    features = backbone(keras.KerasTensor((2, 72, 88, 3)))
    assert tuple(features["high"].shape) == (2, 9, 11, 2 * highres)
    assert tuple(features["high_stage3"].shape) == (2, 9, 11, highres)
    assert tuple(features["low"].shape) == (2, 2, 2, 16 * planes)
    assert backbone.feature_strides == {"high": 8, "low": 64, "high_stage3": 8}


def test_backbone_runs_and_has_no_relu_on_its_outputs():
    backbone = cityscapes_model("ddrnet23_slim").backbone
    features = backbone(random_images(1, 128, 64), training=False)
    shapes = {key: tuple(value.shape) for key, value in features.items()}
    assert shapes == {"high": (1, 16, 8, 128), "high_stage3": (1, 16, 8, 64), "low": (1, 2, 1, 512)}
    # The official heads take the branch sums before any ReLU.
    assert all(float(keras.ops.min(value)) < 0 for value in features.values())


def test_sizes_are_multiples_of_8():
    model = cityscapes_model("ddrnet23_slim")
    assert model.size_divisor == 8
    logits = model(random_images(1, 72, 88), training=False)
    assert tuple(logits.shape) == (1, 72, 88, 19)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(logits)))
    with pytest.raises(ValueError, match=r"height 60 is not a multiple of 8.*64 or 56"):
        model(random_images(1, 60, 64))
    with pytest.raises(ValueError, match=r"width 68 is not a multiple of 8"):
        model(random_images(1, 64, 68))


def test_auxiliary_logits_only_when_training():
    model = presets.from_name("ddrnet23_slim", num_classes=3)
    images = random_images(1, 64, 64)
    assert not isinstance(model(images, training=False), dict)
    outputs = model(images, training=True)
    assert set(outputs) == {"logits", "aux_logits"}
    assert tuple(outputs["aux_logits"].shape) == (1, 64, 64, 3)
    assert model.aux_head.feature_key == "high_stage3" and model.aux_loss_weight == 0.4
    assert not isinstance(presets.from_name("ddrnet23_slim", aux_loss_weight=0.0)(images, training=True), dict)


def test_overrides_reach_the_heads():
    model = presets.from_name("ddrnet23_slim", num_classes=2, head_channels=32, aux_loss_weight=0.2)
    assert model.head.head_channels == 32 and model.aux_head.head_channels == 32
    assert model.aux_loss_weight == 0.2


def test_layers_are_named_after_the_official_modules():
    slim = cityscapes_model("ddrnet23_slim")
    names = {layer.name for layer in slim.backbone.layers}
    for expected in ("conv1_0", "conv1_1", "conv1_3", "conv1_4", "layer1_1_conv2", "layer2_0_downsample_0",
                     "layer2_0_downsample_1", "layer3__0_conv1", "layer4__1_bn2", "layer5__0_conv3",
                     "layer5_0_downsample_0", "down3_0", "down3_1", "down4_0", "down4_3", "down4_4",
                     "compression3_0", "compression4_1"):
        assert expected in names, expected
    paths = slim.backbone.official_paths
    assert set(paths) == {layer.name for layer in slim.backbone.layers if layer.weights}
    assert all(keras_name(path) == name for name, path in paths.items())
    assert paths["layer3__0_conv1"] == "layer3_.0.conv1" and paths["down4_3"] == "down4.3"
    assert slim.backbone.get_layer("conv1_0").use_bias and not slim.backbone.get_layer("down3_0").use_bias
    assert slim.backbone.get_layer("layer5_0_conv2").strides == (2, 2)
    assert "layer3_1__2_conv2" in {layer.name for layer in cityscapes_model("ddrnet39").backbone.layers}
    spp_names = {layer.name for layer in slim.head.spp._flatten_layers(include_self=False)}
    assert {"scale0_0", "scale0_2", "scale4_1", "scale4_3", "process4_2", "compression_2", "shortcut_0"} <= spp_names
    assert slim.head.final_layer.conv2.use_bias and slim.head.final_layer.name == "final_layer"


def test_dappm_pools_count_the_zero_padding():
    """PyTorch's AvgPool2d(5, 2, 2) divides by 25 at the border too: ones average to 9/25 in a corner."""
    dappm = DAPPM(branch_channels=4, out_channels=6)
    ones = np.ones((1, 8, 8, 3), "float32")
    assert tuple(dappm(ones).shape) == (1, 8, 8, 6)
    pooled = keras.ops.convert_to_numpy(dappm.pools[0](dappm.paddings[0](ones)))
    assert pooled.shape == (1, 4, 4, 3)
    np.testing.assert_allclose(pooled[0, 0, 0], 9 / 25, rtol=1e-6)
    np.testing.assert_allclose(pooled[0, 1, 1], 1.0, rtol=1e-6)


def test_dappm_runs_on_dynamic_sizes_and_a_single_pixel():
    inputs = keras.Input((None, None, 16))
    model = keras.Model(inputs, DAPPM(8, 4)(inputs))
    for size in ((1, 1), (3, 5), (12, 7)):
        assert tuple(model(np.ones((1, *size, 16), "float32")).shape) == (1, *size, 4)


def test_layer_configs_are_the_constructor_arguments():
    assert DAPPM(64, 32).get_config()["branch_channels"] == 64
    for layer in (DAPPM(64, 32), DDRNetSegmentHead(5, 16, feature_key="high"), DDRNetHead(3, 32, 16)):
        assert_config_roundtrip(layer)
    backbone = DDRNetBackbone(planes=8, blocks=(1, 1, 2, 1), stage3_splits=2, input_shape=(64, 64, 3))
    clone = assert_config_roundtrip(backbone)
    assert clone.count_params() == backbone.count_params() and clone.highres_planes == 16


def test_segment_head_reads_its_feature_key_or_a_tensor():
    head = DDRNetSegmentHead(3, 8, feature_key="high")
    features = {"high": random_images(1, 8, 8)[..., :2], "low": random_images(1, 1, 1)}
    from_dict = keras.ops.convert_to_numpy(head(features))
    np.testing.assert_array_equal(from_dict, keras.ops.convert_to_numpy(head(features["high"])))
    assert from_dict.shape == (1, 8, 8, 3)


def test_bad_trunk_configurations_are_refused():
    with pytest.raises(ValueError, match="stage3_splits=4 must divide the 6 blocks"):
        DDRNetBackbone(planes=8, blocks=(1, 1, 6, 1), stage3_splits=4)
    with pytest.raises(ValueError, match="4 positive block counts"):
        DDRNetBackbone(planes=8, blocks=(1, 1, 2))
