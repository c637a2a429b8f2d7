"""segzoo.keras_internals: each Keras internal segzoo relies on still exists and does what segzoo needs."""

import os

import keras
import numpy as np
import pytest

from segzoo import keras_internals as internals


def small_model():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")
    x = conv(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, keras.layers.ReLU(name="relu")(x)), conv


def test_application_modules_keep_their_weight_tables():
    assert internals.mobilenet_v3.BASE_WEIGHT_PATH.startswith("https://")
    assert internals.mobilenet_v3.WEIGHTS_HASHES
    assert hasattr(internals.efficientnet, "BASE_WEIGHTS_PATH") and hasattr(internals.efficientnet_v2,
                                                                            "BASE_WEIGHTS_PATH")


def test_keras_home_names_the_applications_cache_folder():
    assert isinstance(internals.keras_home(), str) and os.path.expanduser(internals.keras_home())


def test_backend_resize_takes_a_size_from_a_shape():
    x = np.zeros((1, 4, 6, 2), np.float32)
    reference = np.zeros((1, 8, 12, 1), np.float32)
    out = internals.backend_image.resize(x, keras.ops.shape(reference)[1:3], interpolation="bilinear")
    assert tuple(out.shape) == (1, 8, 12, 2)


def test_trace_symbolically_runs_call_on_known_shapes():
    model, _ = small_model()
    spec = internals.trace_symbolically(model.call, keras.KerasTensor((1, 8, 8, 3)))
    assert tuple(spec.shape) == (1, 8, 8, 4)


def test_sublayers_graph_nodes_and_producer():
    model, conv = small_model()
    names = [layer.name for layer in internals.sublayers(model)]
    assert {"conv", "bn", "relu"} <= set(names) and model.name not in names
    assert model.name in [layer.name for layer in internals.sublayers(model, include_self=True)]
    nodes = internals.graph_nodes(model)
    bn_node = next(node for node in nodes if node.operation.name == "bn")
    assert internals.producer(keras.tree.flatten(bn_node.input_tensors)[0]) is conv
    assert internals.graph_nodes(keras.layers.Dense(2)) == []


def test_replace_class_keeps_the_weights_and_refuses_an_unrelated_class():
    class Folded(keras.layers.BatchNormalization):
        pass

    bn = keras.layers.BatchNormalization()
    bn.build((None, 4))
    gamma = keras.ops.convert_to_numpy(bn.gamma)
    internals.replace_class(bn, Folded)
    assert type(bn) is Folded and np.array_equal(keras.ops.convert_to_numpy(bn.gamma), gamma)
    with pytest.raises(TypeError, match="must subclass"):
        internals.replace_class(bn, keras.layers.Dense)


def test_shadow_call_applies_to_one_layer_and_is_undone():
    first, second = keras.layers.ReLU(), keras.layers.ReLU()
    internals.shadow_call(first, lambda x: x * 0 + 7)
    x = np.full((1, 2), -1.0, np.float32)
    assert keras.ops.convert_to_numpy(first.call(x)).tolist() == [[7.0, 7.0]]
    assert keras.ops.convert_to_numpy(second.call(x)).tolist() == [[0.0, 0.0]]
    internals.restore_call(first)
    assert keras.ops.convert_to_numpy(first.call(x)).tolist() == [[0.0, 0.0]]
