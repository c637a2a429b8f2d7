"""segzoo.onnx_rewrites: the same values from a graph ONNX Runtime runs faster, and the float classifier."""

import keras
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness import TinyHead, random_images
from segzoo import export, onnx_rewrites
from segzoo.backbones.base import Backbone
from segzoo.layers import ConvBNAct, ImageNormalization
from segzoo.models import SegmentationModel


def normalising_graph(offset_shape=(1, 1, 1, 3)):
    """images (N, H, W, 3) -> Mul (3,) -> Sub (offset_shape) -> Transpose to NCHW; and Shape(images)."""
    scale = numpy_helper.from_array(np.array([0.5, 0.25, 2.0], np.float32), "scale")
    offset = numpy_helper.from_array(np.arange(np.prod(offset_shape), dtype=np.float32).reshape(offset_shape),
                                     "offset")
    nodes = [helper.make_node("Shape", ["images"], ["size"]),
             helper.make_node("Mul", ["images", "scale"], ["scaled"]),
             helper.make_node("Sub", ["scaled", "offset"], ["normalised"]),
             helper.make_node("Transpose", ["normalised"], ["nchw"], perm=[0, 3, 1, 2])]
    graph = helper.make_graph(
        nodes, "normalising", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", "h", "w", 3])],
        [helper.make_tensor_value_info("nchw", TensorProto.FLOAT, ["n", 3, "h", "w"]),
         helper.make_tensor_value_info("size", TensorProto.INT64, [4])], [scale, offset])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


def run(model, images):
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})


def test_the_input_normalisation_moves_to_rows_and_gives_the_same_bits():
    original = normalising_graph()
    rewritten = normalising_graph()
    assert onnx_rewrites.rowwise_input_normalization(rewritten) == 2
    onnx.checker.check_model(rewritten)
    assert not [node for node in rewritten.graph.node if node.op_type in ("Mul", "Sub") and "images" in node.input]
    assert {i.name for i in rewritten.graph.initializer}.isdisjoint({"scale", "offset"})  # unused ones dropped
    for shape in ((1, 5, 7, 3), (2, 4, 6, 3)):  # any batch and size
        images = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
        for expected, actual in zip(run(original, images), run(rewritten, images)):
            np.testing.assert_array_equal(actual, expected)


def test_a_constant_that_is_not_per_channel_is_left_alone():
    model = normalising_graph(offset_shape=(1, 5, 7, 3))  # one value per pixel: no row-wise form
    before = model.SerializeToString()
    assert onnx_rewrites.rowwise_input_normalization(model) == 1  # the Mul only; the chain stops there
    images = np.random.default_rng(1).uniform(0, 255, (1, 5, 7, 3)).astype(np.float32)
    np.testing.assert_array_equal(run(model, images)[0], run(onnx.load_from_string(before), images)[0])


class NormalisingBackbone(Backbone):
    """TinyBackbone's levels behind the ImageNet normalisation, as segzoo's own backbones begin."""

    size_divisor = 8

    def __init__(self, **kwargs):
        inputs = keras.Input((None, None, 3))
        p1 = ConvBNAct(4, strides=2, name="p1")(ImageNormalization(name="normalization")(inputs))
        p2 = ConvBNAct(8, strides=2, name="p2")(p1)
        p3 = ConvBNAct(8, strides=2, name="p3")(p2)
        super().__init__(inputs, {"P1": p1, "P2": p2, "P3": p3}, {"P1": 2, "P2": 4, "P3": 8}, **kwargs)


@pytest.fixture(scope="module")
def model():
    return SegmentationModel(NormalisingBackbone(), TinyHead(3))


def _weights_quantised(graph, conv):
    producers = {output: node for node in graph.node for output in node.output}
    return getattr(producers.get(conv.input[1]), "op_type", None) == "DequantizeLinear"


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_onnx_exports_normalise_row_wise_and_int8_keeps_the_classifier_in_float(model, tmp_path, quantize):
    images = random_images(8, 32, 48, seed=3)
    path = tmp_path / f"m_{quantize}.onnx"
    report = export.export_model(model, path, "onnx", quantize, (32, 48), representative_images=images)
    assert report.class_agreement >= export.MIN_AGREEMENT[quantize]  # and the export's own check passed
    graph = onnx.load(path).graph
    assert any(i.startswith("segzoo_rowwise/") for node in graph.node for i in node.input)
    convs = [node for node in graph.node if node.op_type == "Conv"]
    classifier = onnx_rewrites.classifier_convolutions(onnx.load(path))
    assert len(classifier) == 1 and classifier[0] == convs[-1].name
    quantised = {conv.name: _weights_quantised(graph, conv) for conv in convs}
    if quantize == "int8":
        assert not quantised.pop(classifier[0]) and all(quantised.values())  # all but the classifier in int8
    else:
        assert not any(quantised.values())
