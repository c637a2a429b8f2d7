"""Recipes: settings files (TOML, YAML, JSON), the shipped CamVid recipes, and the precedence
defaults < saved run < recipe < typed flags of ``segzoo train``."""

import csv
import json
import os

import pytest

from segzoo import cli, recipes
from segzoo.cli.train import resolve_config
from segzoo.errors import ConfigError
from segzoo.training import CONFIG_FILE, INVOCATION_FIELDS, TrainConfig, run_record, saved_settings


def train_args(argv):
    return cli.build_parser("train").parse_args(["train", *argv])


def test_shipped_recipes_build_configs_that_follow_the_papers():
    names = recipes.list_recipes()
    assert {"camvid/ddrnet23_slim", "camvid/pidnet_s", "camvid/deeplabv3plus_mobilenetv3large"} <= set(names)
    for name in names:
        config = TrainConfig(data="x", **recipes.read_recipe(name))
        assert (config.optimizer, config.momentum, config.weight_decay, config.poly_power) == ("sgd", 0.9, 5e-4, 0.9)
        assert (config.ohem_threshold, config.ohem_min_kept, config.scale_range) == (0.9, 131072, (0.5, 2.0))
        assert config.preset in name and isinstance(config.image_size, tuple)


@pytest.mark.parametrize("suffix, text", [
    (".toml", 'epochs = 3\nimage_size = [32, 48]\nlearning_rate = 1\nclass_weights = "auto"\n'),
    (".yaml", "epochs: 3\nimage_size: [32, 48]\nlearning_rate: 1\nclass_weights: auto\n"),
    (".json", '{"epochs": 3, "image_size": [32, 48], "learning_rate": 1, "class_weights": "auto"}'),
])
def test_a_recipe_file_in_each_format_comes_back_typed(tmp_path, suffix, text):
    if suffix == ".yaml":
        pytest.importorskip("yaml")
    path = tmp_path / f"recipe{suffix}"
    path.write_text(text)
    settings = recipes.read_recipe(path)
    assert settings == {"epochs": 3, "image_size": (32, 48), "learning_rate": 1.0, "class_weights": ("auto",)}
    assert isinstance(settings["learning_rate"], float)


@pytest.mark.parametrize("text, message", [
    ("epoch = 3\n", r"'epoch' is not a setting of TrainConfig\. Did you mean 'epochs'\?"),
    ('epochs = "many"\n', r"epochs = 'many': expected a whole number"),
    ("image_size = [32]\n", r"image_size = \[32\]: expected a list of 2 int values"),
    ('optimizer = "lion"\n', r"optimizer = 'lion': expected one of sgd, adam, adamw"),
    ("augment = 1\n", r"augment = 1: expected true or false"),
    ("epochs = [\n", r"not a readable recipe"),
])
def test_a_bad_recipe_names_the_file_the_setting_and_what_is_expected(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as error:
        recipes.read_recipe(path)
    assert str(path) in str(error.value)


def test_an_unknown_recipe_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"camvid/ddrnet23_slim.*Did you mean 'camvid/pidnet_s'"):
        recipes.read_recipe("camvid/pidnet_z")
    (tmp_path / "recipe.ini").write_text("epochs = 3")
    with pytest.raises(ConfigError, match=r"\.toml, \.yaml, \.yml, \.json file, not \.ini"):
        recipes.read_recipe(tmp_path / "recipe.ini")


def test_typed_flags_override_the_recipe_and_untyped_ones_keep_it(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text('preset = "pidnet_s"\nepochs = 7\nbatch_size = 3\naugment = false\n')
    config = resolve_config(train_args(["--config", str(path), "--data", "d", "--epochs", "9", "--augment"]))
    assert (config.preset, config.epochs, config.batch_size, config.augment) == ("pidnet_s", 9, 3, True)
    assert config.learning_rate == TrainConfig.learning_rate  # neither in the recipe nor typed


def test_resume_takes_the_saved_settings_except_how_this_process_runs(tmp_path):
    saved = TrainConfig(data=str(tmp_path / "data"), epochs=5, batch_size=3, learning_rate=0.05, process_id=1,
                        num_processes=2, checkpoint_dir=str(tmp_path))
    record = run_record(saved, {"files": 1}, ["a", "b"])
    record["config"]["an_old_setting"] = 1  # written by an older segzoo: left out
    (tmp_path / CONFIG_FILE).write_text(json.dumps(record))
    settings = saved_settings(tmp_path)
    assert "an_old_setting" not in settings and not set(INVOCATION_FIELDS) & set(settings)
    config = resolve_config(train_args(["--checkpoint_dir", str(tmp_path), "--resume", "--epochs", "8"]))
    assert (config.data, config.batch_size, config.learning_rate) == (saved.data, 3, 0.05)
    assert (config.epochs, config.resume, config.process_id, config.num_processes) == (8, True, None, None)


def test_train_without_data_or_saved_run_says_what_to_give(tmp_path, capsys):
    status = cli.main(["train", "--checkpoint_dir", str(tmp_path / "none"), "--resume"])
    error = capsys.readouterr().err
    assert status == 2 and "--data is required" in error and "Traceback" not in error


@pytest.mark.slow
def test_a_run_from_a_recipe_resumes_from_its_saved_settings(make_folder, tmp_path, capsys, tiny_preset):
    folder = make_folder(num_sources=5, copies=0, size=(32, 48))
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('preset = "tiny"\nweights = "none"\nimage_size = [32, 48]\nbatch_size = 2\n'
                      'epochs = 1\nsteps_per_epoch = 1\nval_ratio = 0.2\nprogress = 0\noptimizer = "sgd"\n')
    run = tmp_path / "run"
    assert cli.main(["train", "--config", str(recipe), "--data", str(folder), "--checkpoint_dir", str(run)]) == 0
    with open(run / CONFIG_FILE) as f:
        recorded = json.load(f)["config"]
    assert recorded["optimizer"] == "sgd" and recorded["image_size"] == [32, 48] and recorded["data"] == str(folder)
    capsys.readouterr()
    # nothing but the folder, --resume and the deliberate change
    assert cli.main(["train", "--checkpoint_dir", str(run), "--resume", "--epochs", "2", "--allow_changes"]) == 0
    with open(run / "log.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1"]
    assert os.path.isfile(run / "best.keras")
