"""segzoo.utils: multiply-add and parameter counts."""

import keras
import pytest

from harness import TinyBackbone, TinyHead
from segzoo.layers import SeparableConvBNAct
from segzoo.models import SegmentationModel
from segzoo.utils import count_flops, count_params


def test_count_flops_of_functional_layers_by_hand():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)       # 16*16*8*27
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)                 # 16*16*8*9
    x = keras.layers.Conv2D(4, 1, groups=2)(x)                            # 16*16*4*4
    x = keras.layers.Conv2DTranspose(2, 2, strides=2)(x)                  # 16*16*4*4*2
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5)(x)                                          # 2*5
    model = keras.Model(inputs, x)
    expected = 16 * 16 * 8 * 27 + 16 * 16 * 8 * 9 + 16 * 16 * 4 * 4 + 16 * 16 * 4 * 4 * 2 + 10
    assert count_flops(model) == expected


def test_count_flops_inside_subclassed_layers_and_nested_models():
    model = SegmentationModel(TinyBackbone(), TinyHead(3))
    # p1: 16x16x4 from 3 ch; p2: 8x8x8 from 4; p3: 4x4x8 from 8; head 4x4x3 from 8
    expected = 16 * 16 * 4 * 27 + 8 * 8 * 8 * 36 + 4 * 4 * 8 * 72 + 4 * 4 * 3 * 8
    assert count_flops(model, (32, 32, 3)) == expected
    # the count scales with the number of output pixels, and instrumenting leaves no trace
    assert count_flops(model, (64, 64, 3)) == 4 * expected
    assert "call" not in model.backbone.get_layer("p1").conv.__dict__

    inputs = keras.Input((16, 16, 6))
    separable = keras.Model(inputs, SeparableConvBNAct(10)(inputs))
    assert count_flops(separable) == 16 * 16 * 6 * 9 + 16 * 16 * 6 * 10


def test_count_flops_needs_a_known_shape():
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(SegmentationModel(TinyBackbone(), TinyHead(2)))


def test_count_params_leaves_out_the_auxiliary_head():
    model = SegmentationModel(TinyBackbone(), TinyHead(3), aux_head=TinyHead(3, level="P2"))
    assert count_params(model) == model.count_params() - (8 * 3 + 3)
