"""Every preset: builds, runs, trains a step, keeps its recorded size and cost, saves and loads,
and gives the same outputs on the JAX and PyTorch backends as on TensorFlow."""

import functools

import numpy as np
import pytest

from harness import (STRUCTURAL_PRESETS, assert_keras_file_roundtrip, assert_trains_one_step, random_images,
                     random_labels, run_in_backend)
from segzoo import presets
from segzoo.utils import count_flops, count_params

NAMES = presets.list_presets()


@functools.lru_cache(maxsize=None)
def cached_model(name, num_classes=3):
    """One model per preset and class count, shared by the fast tests (building is the slow part)."""
    return presets.from_name(name, num_classes=num_classes)


@pytest.mark.parametrize("name", NAMES)
def test_forward_gives_logits_at_input_size(name):
    model = cached_model(name)
    y = model.predict(random_images(2, 64, 96), verbose=0)
    assert y.shape == (2, 64, 96, 3) and y.dtype == np.float32
    assert np.all(np.isfinite(y))
    assert not isinstance(model(random_images(1, 64, 64), training=False), dict)


@pytest.mark.parametrize("name", NAMES)
def test_recorded_parameters_and_flops_hold(name):
    preset = presets.get_preset(name)
    model = presets.from_name(name, num_classes=presets.REPORT_CLASSES)
    assert count_params(model) == pytest.approx(preset.params, rel=0.01)
    assert count_flops(model, presets.REPORT_SHAPE) / 1e9 == pytest.approx(preset.gmacs, rel=0.01)
    assert f"{preset.params / 1e6:.2f} M parameters" in preset.summary()


@pytest.mark.parametrize("name", NAMES)
def test_trains_one_step_multiclass_and_binary(name):
    images, labels = random_images(2, 64, 64), random_labels(2, 64, 64, 3)
    assert_trains_one_step(cached_model(name), images, labels)
    binary = presets.from_name(name, num_classes=1)
    assert binary.num_classes == 1
    assert_trains_one_step(binary, images, (labels > 0).astype("int32"))


@pytest.mark.parametrize("name", NAMES)
def test_keras_file_roundtrip(name, tmp_path):
    assert_keras_file_roundtrip(cached_model(name), random_images(1, 64, 64), tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_weights_file_loads_through_from_name(name, tmp_path):
    model = cached_model(name)
    path = str(tmp_path / f"{name}.weights.h5")
    model.save_weights(path)
    loaded = presets.from_name(name, num_classes=3, weights=path)
    x = random_images(1, 64, 64)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_unknown_name_lists_valid_names_and_the_closest():
    with pytest.raises(ValueError) as error:
        presets.from_name("ddrnet23slim")
    message = str(error.value)
    assert "ddrnet23slim" in message and all(name in message for name in NAMES)
    if "ddrnet23_slim" in NAMES:
        assert "Did you mean 'ddrnet23_slim'?" in message


def test_bad_weights_argument_is_refused(tmp_path):
    if not NAMES:
        pytest.skip("no presets registered")
    with pytest.raises(ValueError, match="weights"):
        presets.from_name(NAMES[0], weights=str(tmp_path / "missing.weights.h5"))


def test_markdown_table_lists_every_preset():
    table = presets.markdown_table()
    assert all(f"`{name}`" in table for name in NAMES)


def _layer_kinds(model):
    """Layer classes with their activation, e.g. ``('Activation', 'hard_swish')``, of a model and its sub-models."""
    kinds = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        activation = getattr(layer, "activation", None)
        kinds.add((type(layer).__name__, getattr(activation, "__name__", str(activation))))
    return kinds


def test_structural_presets_use_every_layer_kind_of_the_zoo():
    """The slow per-preset checks run on STRUCTURAL_PRESETS only: they must not miss a layer kind."""
    assert set(STRUCTURAL_PRESETS) <= set(NAMES)
    covered = set().union(*(_layer_kinds(cached_model(name)) for name in STRUCTURAL_PRESETS))
    for name in set(NAMES) - set(STRUCTURAL_PRESETS):
        assert _layer_kinds(cached_model(name)) <= covered, name


@pytest.mark.slow
@pytest.mark.parametrize("name", STRUCTURAL_PRESETS)
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends_match_tensorflow(backend, name, tmp_path):
    """Each structural preset, with TensorFlow's weights, gives TensorFlow's logits and trains a step
    (one subprocess per preset: a JAX train step compiles for a minute or more)."""
    images = random_images(1, 64, 64)
    np.save(tmp_path / "images.npy", images)
    model = cached_model(name)
    model.save_weights(str(tmp_path / "tf.weights.h5"))
    expected = model.predict(images, verbose=0)
    loss = run_in_backend(backend, f"""
        import json, numpy as np, keras
        from segzoo import presets
        from segzoo.folding import fold_batch_norm
        from harness import assert_trains_one_step, random_labels
        images = np.load({str(tmp_path / "images.npy")!r})
        model = presets.from_name({name!r}, num_classes=3, weights={str(tmp_path / "tf.weights.h5")!r})
        np.save({str(tmp_path / "out.npy")!r}, keras.ops.convert_to_numpy(model(images)))
        np.save({str(tmp_path / "folded.npy")!r},
                keras.ops.convert_to_numpy(fold_batch_norm(model)(images, training=False)))
        print(json.dumps(float(assert_trains_one_step(model, np.repeat(images, 2, 0), random_labels(2, 64, 64, 3)))))
    """)
    # Untrained deep nets can give logits in the thousands (DDRNet: ~1e3): float32 rounding
    # then differs by ~1e-6 of that scale between backends, so the tolerance follows the scale.
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-3 + 1e-4 * scale, rtol=1e-3)
    np.testing.assert_allclose(np.load(tmp_path / "folded.npy"), expected, atol=1e-3 + 1e-4 * scale, rtol=1e-3,
                               err_msg="batch norm folded")
    assert np.isfinite(loss)
