"""segzoo.models.SegmentationModel: outputs, auxiliary head, training, saving."""

import keras
import numpy as np
import pytest

from harness import (TinyBackbone, TinyHead, assert_config_roundtrip, assert_keras_file_roundtrip,
                     assert_trains_one_step, random_images, random_labels)
from segzoo.checkpoints.torch_file import CheckpointError
from segzoo.models import SegmentationModel, load_model


def tiny_model(num_classes=3, aux=True, aux_loss_weight=0.4, input_shape=(None, None, 3)):
    return SegmentationModel(TinyBackbone(input_shape), TinyHead(num_classes),
                             aux_head=TinyHead(num_classes, level="P2") if aux else None,
                             aux_loss_weight=aux_loss_weight)


def test_logits_at_input_size_in_float32():
    model = tiny_model()
    y = model(random_images(2, 32, 48))
    assert y.shape == (2, 32, 48, 3)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    assert model.num_classes == 3


def test_auxiliary_logits_only_when_training():
    model = tiny_model()
    x = random_images(1, 32, 32)
    assert not isinstance(model(x, training=False), dict)
    outputs = model(x, training=True)
    assert set(outputs) == {"logits", "aux_logits"}
    assert outputs["aux_logits"].shape == (1, 32, 32, 3)
    assert not isinstance(tiny_model(aux_loss_weight=0.0)(x, training=True), dict)


def test_auxiliary_loss_is_added_with_its_weight():
    x, y = random_images(2, 32, 32), random_labels(2, 32, 32, 3)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = tiny_model(aux_loss_weight=0.5)
    model.compile(loss=loss)
    outputs = model(x, training=True)
    expected = (loss(y, outputs["logits"]) + 0.5 * loss(y, outputs["aux_logits"]))
    total = model.compute_loss(x, y, outputs, training=True)
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-6)


def test_trains_and_evaluates_with_auxiliary_head():
    x, y = random_images(2, 32, 32), random_labels(2, 32, 32, 3)
    model = tiny_model()
    assert_trains_one_step(model, x, y)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    results = model.evaluate(x, y, verbose=0, return_dict=True)
    assert 0.0 <= results["accuracy"] <= 1.0


def test_binary_model_has_one_channel():
    model = tiny_model(num_classes=1, aux=False)
    assert model(random_images(1, 16, 16)).shape == (1, 16, 16, 1)
    assert_trains_one_step(model, random_images(2, 16, 16), random_labels(2, 16, 16, 2))


def test_input_size_must_be_a_multiple_of_the_divisor():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"height 20 is not a multiple of 8.*24 or 16"):
        model(random_images(1, 20, 32))


def test_config_and_keras_file_roundtrip(tmp_path):
    model = tiny_model(input_shape=(32, 32, 3))
    assert_config_roundtrip(model)
    loaded = assert_keras_file_roundtrip(model, random_images(2, 32, 32), tmp_path)
    assert loaded.aux_loss_weight == model.aux_loss_weight
    assert isinstance(loaded.aux_head, TinyHead)


def test_load_model_works_in_a_fresh_process(tmp_path):
    """A .keras file of a preset loads where only segzoo.models was imported (no other segzoo module)."""
    from harness import run_in_backend
    from segzoo import presets

    path = tmp_path / "model.keras"
    model = presets.from_name("deeplabv3plus_mobilenetv3small", num_classes=2)
    model.compile(optimizer="adam", loss=__import__("segzoo.losses", fromlist=["x"]).CrossEntropy())
    model.save(path)
    result = run_in_backend("tensorflow", f"""
        import json
        from segzoo.models import load_model
        model = load_model({str(path)!r})
        print(json.dumps({{"name": type(model).__name__, "loss": type(model.loss).__name__}}))
    """)
    assert result == {"name": "SegmentationModel", "loss": "CrossEntropy"}
    with pytest.raises(CheckpointError, match="expected a .keras file"):
        load_model(tmp_path / "model.h5")


def test_every_submodule_is_reachable_from_the_package():
    import os

    import segzoo

    package = os.path.dirname(segzoo.__file__)
    modules = {name[:-3] for name in os.listdir(package) if name.endswith(".py") and name not in ("__init__.py", "__main__.py")}
    modules |= {name for name in os.listdir(package) if os.path.isfile(os.path.join(package, name, "__init__.py"))}
    assert modules == set(segzoo._SUBMODULES)
    assert segzoo.presets.list_presets()


def test_every_module_that_registers_a_class_is_imported_before_loading():
    """The list is derived from the sources: it holds the folding and export layers too."""
    import segzoo.models

    modules = segzoo.models.serializable_modules()
    assert {"segzoo.folding", "segzoo.export", "segzoo.layers.conv", "segzoo.losses.boundary"} <= set(modules)


def test_folded_and_postprocessed_models_load_in_a_fresh_process(tmp_path):
    from harness import random_images, run_in_backend
    from segzoo import export
    from segzoo.folding import fold_batch_norm

    model = SegmentationModel(TinyBackbone(), TinyHead(3))
    images = random_images(1, 32, 48)
    folded = fold_batch_norm(model)
    folded.save(tmp_path / "folded.keras")
    classes = export.inference_model(model, (32, 48), "classes")
    classes.save(tmp_path / "classes.keras")
    np.save(tmp_path / "images.npy", images)
    run_in_backend("tensorflow", f"""
        import json, keras, numpy as np
        import harness  # the tiny test backbone and head
        from segzoo.models import import_serializable_modules, load_model
        images = np.load({str(tmp_path / "images.npy")!r})
        np.save({str(tmp_path / "folded.npy")!r}, load_model({str(tmp_path / "folded.keras")!r}).predict(images))
        import_serializable_modules()  # a functional wrapper is no SegmentationModel: Keras loads it, safely
        classes = keras.saving.load_model({str(tmp_path / "classes.keras")!r}, safe_mode=True)
        np.save({str(tmp_path / "classes.npy")!r}, keras.ops.convert_to_numpy(classes(images)))
        print(json.dumps("ok"))
    """)
    np.testing.assert_allclose(np.load(tmp_path / "folded.npy"), folded.predict(images, verbose=0), atol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "classes.npy"), keras.ops.convert_to_numpy(classes(images)))
