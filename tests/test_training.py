"""segzoo.training: losses and optimisers by name, weight decay, a real training run, resumption,
mirrored replicas, mixed precision."""

import csv
import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from harness import run_in_backend
from segzoo import distributed, losses, training
from segzoo.training import TrainConfig, make_loss, make_optimizer, train
from segzoo.weight_average import WeightAverage


def config(folder, checkpoint_dir, **overrides):
    values = dict(data=str(folder), preset="ddrnet23_slim", epochs=2, batch_size=4, image_size=(64, 96),
                  weights="none", checkpoint_dir=str(checkpoint_dir), learning_rate=3e-3, warmup_epochs=0.0,
                  augment=False, progress=0, deterministic=True)
    values.update(overrides)
    return TrainConfig(**values)


def test_make_loss_by_name_and_its_options():
    ce = make_loss("ce", 3, class_weights=(1.0, 2.0, 3.0), ohem_threshold=0.9, ohem_min_kept=10)
    assert isinstance(ce, losses.CrossEntropy) and ce.class_weights == [1.0, 2.0, 3.0]
    assert isinstance(make_loss("focal", 3, focal_gamma=1.5), losses.FocalLoss)
    assert isinstance(make_loss("bce", 2), losses.BinaryCrossEntropy)
    assert make_loss("binary_focal", 2).alpha == 0.25
    with pytest.raises(ValueError, match="2 values for 3 classes"):
        make_loss("ce", 3, class_weights=(1.0, 2.0))
    with pytest.raises(ValueError, match="OHEM"):
        make_loss("focal", 3, ohem_threshold=0.9)
    with pytest.raises(ValueError, match="ce"):
        make_loss("dice", 3)


@pytest.mark.parametrize("name", training.OPTIMIZERS)
def test_weight_decay_is_applied(name):
    variable = keras.Variable(np.ones((4,), "float32"))
    optimizer = make_optimizer(name, 0.1, weight_decay=0.5)
    optimizer.apply_gradients([(np.zeros((4,), "float32"), variable)])
    # decoupled decay with a zero gradient: w <- w * (1 - lr * wd)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), 0.95, rtol=1e-6)
    with pytest.raises(ValueError, match="choose one of"):
        make_optimizer("radam", 0.1)


def test_training_learns_and_writes_checkpoints(make_folder, tmp_path):
    folder = make_folder(num_sources=16, copies=0, size=(64, 96))
    model, history = train(config(folder, tmp_path / "run", epochs=8, steps_per_epoch=10, loss="ce"))
    # chance for 3 balanced classes is about 0.2 mean IoU; the red channel tells the classes apart
    assert max(history["val_mean_iou"]) > 0.6, history["val_mean_iou"]
    for name in ("best.keras", "last.keras", "state.json", "log.csv"):
        assert os.path.isfile(tmp_path / "run" / name)
    assert os.path.isdir(tmp_path / "run" / "logs")
    assert model.class_names == ["background", "hole", "crack"]
    best = keras.saving.load_model(tmp_path / "run" / "best.keras", safe_mode=True)
    assert best.class_colors == [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    with pytest.raises(FileExistsError, match="--resume"):
        train(config(folder, tmp_path / "run"))


def test_a_warm_up_longer_than_the_run_is_refused_before_any_work(tmp_path):
    with pytest.raises(training.ConfigError, match=r"warmup_epochs=5.0 is longer than the run \(epochs=1\)"):
        train(config(tmp_path / "no_data", tmp_path / "run", epochs=1, warmup_epochs=5.0))
    assert not os.path.exists(tmp_path / "run")


def test_a_crop_without_area_is_refused_before_any_work(tmp_path):
    with pytest.raises(training.ConfigError, match=r"crop_size='0 48': a training crop needs a positive height"):
        train(config(tmp_path / "no_data", tmp_path / "run", augment=True, crop_size=(0, 48)))
    assert not os.path.exists(tmp_path / "run")


def test_a_crop_size_shapes_the_training_batches_and_validation_keeps_image_size(make_folder, tmp_path, caplog):
    from segzoo import data

    folder = make_folder(num_sources=8, copies=0)
    settings = config(folder, tmp_path / "run", augment=True, crop_size=(32, 48))
    with data.open_source(str(folder)) as source:
        train_ds, val_ds = training._pipelines(settings, source, distributed.start_run(), resumed=False)
        assert next(iter(train_ds))[0].shape == (4, 32, 48, 3)
        assert next(iter(val_ds))[0].shape[1:] == (64, 96, 3)
        with caplog.at_level("WARNING", logger="segzoo.training"):  # a recipe's crop, augmentation turned off
            whole, _ = training._pipelines(dataclasses.replace(settings, augment=False), source,
                                           distributed.start_run(), resumed=False)
        assert next(iter(whole))[0].shape == (4, 64, 96, 3)
        assert "crop_size= applies to the online augmentation, which is off" in caplog.text


def test_training_reads_one_endless_stream_and_an_epoch_is_one_pass(make_folder, tmp_path, tiny_preset):
    from segzoo import data

    folder = make_folder(num_sources=8, copies=0)
    settings = config(folder, tmp_path / "run", preset=tiny_preset, epochs=2)
    with data.open_source(str(folder)) as source:
        train_ds, val_ds = training._pipelines(settings, source, distributed.start_run(), resumed=False)
        images = source.info.split_sizes["train"]
        # one iterator for the whole run: a finite stream would end (and tear down) its iterator every epoch
        passes = 2 * (images // settings.batch_size) + 1
        assert sum(1 for _ in train_ds.take(passes)) == passes
        assert sum(1 for _ in val_ds) == -(-source.info.split_sizes["validation"] // settings.batch_size)
    model, history = train(settings)
    assert len(history["loss"]) == 2 and int(model.optimizer.iterations) == 2 * (images // settings.batch_size)


def test_resume_continues_epoch_optimizer_and_schedule(make_folder, tmp_path, tiny_preset):
    folder = make_folder(num_sources=8, copies=0)
    run = tmp_path / "run"
    model, _ = train(config(folder, run, preset=tiny_preset, epochs=1, steps_per_epoch=3, optimizer="sgd",
                            schedule="poly"))
    steps = int(model.optimizer.iterations)
    assert steps == 3
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(config(folder, tmp_path / "empty", resume=True))
    # the interrupted run planned 1 epoch; resuming with epochs=3 runs epochs 2 and 3 on the same schedule
    resumed, history = train(config(folder, run, preset=tiny_preset, epochs=3, steps_per_epoch=3, optimizer="sgd",
                                    schedule="poly", resume=True, allow_changes=True))  # more epochs: a deliberate change
    assert int(resumed.optimizer.iterations) == 9
    assert len(history["loss"]) == 2
    with open(run / "log.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1", "2"]
    with open(run / "state.json") as f:
        assert json.load(f)["epochs_done"] == 3
    # the same schedule, continued at the restored step
    schedule = resumed.optimizer._learning_rate
    assert schedule.get_config() == model.optimizer._learning_rate.get_config()
    assert float(resumed.optimizer.learning_rate) == pytest.approx(float(schedule(9)))


def test_a_moving_average_is_validated_kept_as_best_and_resumed(make_folder, tmp_path, tiny_preset, caplog):
    from segzoo import data

    folder = make_folder(num_sources=8, copies=0)
    run = tmp_path / "run"
    settings = config(folder, run, preset=tiny_preset, epochs=1, steps_per_epoch=3, optimizer="sgd",
                      learning_rate=0.2, ema_momentum=0.5)
    with caplog.at_level("WARNING", logger="segzoo.training"):
        model, history = train(settings)
    assert "ema_momentum=0.5 averages over about 2 steps, more than a quarter of the run's 3" in caplog.text
    last = keras.saving.load_model(run / "last.keras", safe_mode=True)
    best = keras.saving.load_model(run / "best.keras", safe_mode=True)
    with data.open_source(str(folder)) as source:
        _, val_ds = training._pipelines(settings, source, distributed.start_run(), resumed=False)
        # validation scored the average, which best.keras and the returned model hold; last.keras trains on
        assert model.evaluate(val_ds, verbose=0, return_dict=True)["loss"] == pytest.approx(history["val_loss"][-1])
        assert last.evaluate(val_ds, verbose=0, return_dict=True)["loss"] != pytest.approx(history["val_loss"][-1])
    saved = WeightAverage(0.5)
    saved.set_model(last)
    saved.load(run / "average.npz")
    with saved.applied():
        for averaged, kept, stored in zip(model.weights, best.weights, last.weights):
            np.testing.assert_allclose(keras.ops.convert_to_numpy(kept), keras.ops.convert_to_numpy(averaged),
                                       rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(keras.ops.convert_to_numpy(stored), keras.ops.convert_to_numpy(averaged),
                                       rtol=1e-6, atol=1e-7)

    def differ(variables, others):
        return any(not np.allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
                   for a, b in zip(variables, others))

    assert differ(last.trainable_weights, model.trainable_weights)
    assert differ(last.non_trainable_weights, model.non_trainable_weights)  # batch-norm statistics are averaged too
    caplog.clear()
    with caplog.at_level("WARNING", logger="segzoo.training"):
        resumed, _ = train(dataclasses.replace(settings, epochs=2, resume=True, allow_changes=True))
        assert int(resumed.optimizer.iterations) == 6 and "starts anew" not in caplog.text
        os.remove(run / "average.npz")
        train(dataclasses.replace(settings, epochs=3, resume=True, allow_changes=True))
    assert "no average of the weights saved with epoch 2; the average starts anew" in caplog.text
    with pytest.raises(training.ConfigError, match="ema_momentum cannot change on resume"):
        train(dataclasses.replace(settings, epochs=4, resume=True, allow_changes=True, ema_momentum=0.9))


def test_a_moving_average_momentum_outside_0_1_is_refused_before_any_work(tmp_path):
    with pytest.raises(training.ConfigError, match=r"ema_momentum=1.5: the momentum of a moving average lies"):
        train(config(tmp_path / "no_data", tmp_path / "run", ema_momentum=1.5))
    assert not os.path.exists(tmp_path / "run")


def test_binary_loss_trains_a_one_channel_model(make_folder, tmp_path, tiny_preset):
    folder = make_folder(num_sources=6, copies=0, num_classes=2)
    model, history = train(config(folder, tmp_path / "run", preset=tiny_preset, epochs=1, loss="binary_focal",
                                  augment=True))
    assert model.num_classes == 1 and model.class_names == ["background", "hole"]
    assert np.isfinite(history["loss"][0])


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(make_folder, tmp_path):
    """--multi_gpu: the batch is per replica and the global batch follows the real device count."""
    folder = make_folder(num_sources=8, copies=0)
    result = run_in_backend("tensorflow", f"""
        import json, logging, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        records = []
        logging.basicConfig(level=logging.INFO)
        logging.getLogger("segzoo.training").addHandler(type("H", (logging.Handler,), {{
            "emit": lambda self, r: records.append(r.getMessage())}})())
        import harness
        from segzoo.training import TrainConfig, train
        harness.register_tiny_preset()
        model, history = train(TrainConfig(data={str(folder)!r}, preset="tiny", epochs=1, batch_size=2,
                                           image_size=(64, 96), weights="none",
                                           checkpoint_dir={str(tmp_path / "run")!r}, multi_gpu=True, progress=0, steps_per_epoch=2))
        print(json.dumps({{"log": records, "loss": history["loss"]}}))
    """)
    assert any("global batch 4 on 2 device(s), peak learning rate 0.002" in line for line in result["log"]), (
        result["log"])
    assert all(np.isfinite(result["loss"]))


@pytest.mark.slow
def test_mixed_bfloat16_trains(make_folder, tmp_path):
    folder = make_folder(num_sources=6, copies=0)
    result = run_in_backend("tensorflow", f"""
        import json
        from segzoo.training import TrainConfig, train
        model, history = train(TrainConfig(data={str(folder)!r}, epochs=1, batch_size=2, image_size=(64, 96),
                                           weights="none", checkpoint_dir={str(tmp_path / "run")!r},
                                           precision="mixed_bfloat16", progress=0, steps_per_epoch=2))
        print(json.dumps({{"loss": history["loss"], "dtype": model.compute_dtype,
                          "logits": str(model.predict(__import__("numpy").zeros((1, 64, 96, 3)), verbose=0).dtype)}}))
    """)
    assert result["dtype"] == "bfloat16" and result["logits"] == "float32"
    assert all(np.isfinite(result["loss"]))


def test_choosing_a_gpu_that_is_not_there_says_how_many_are():
    with pytest.raises(ValueError, match=r"gpu=3, but 0 GPU\(s\) are visible"):
        distributed.make_strategy(gpu=3)
