"""Recipes: the settings of a training run kept in a file, and the recipes segzoo ships.

A recipe is a flat table of :class:`segzoo.training.TrainConfig` fields in TOML,
YAML or JSON (``epochs = 200``, ``image_size = [360, 480]``); comments say where
and why it follows or leaves a paper. ``segzoo train --config FILE`` reads one,
and flags given on the command line override its values. Precedence, lowest
first: ``TrainConfig``'s defaults, the saved run's ``config.json`` (with
``--resume``), the recipe, the flags.

Recipes shipped with segzoo are named by their path below this package without
the suffix (``camvid/ddrnet23_slim``); :func:`list_recipes` lists them and
:func:`recipe_path` resolves a name or a file.
"""

from __future__ import annotations

import difflib
import json
import os

from segzoo.errors import ConfigError
from segzoo.settings import check_settings

SUFFIXES = (".toml", ".yaml", ".yml", ".json")
_HERE = os.path.dirname(os.path.abspath(__file__))


def list_recipes() -> list[str]:
    """Names of the recipes shipped with segzoo, e.g. ``["camvid/ddrnet23_slim", ...]``."""
    names = []
    for folder, _, files in os.walk(_HERE):
        for name in files:
            stem, suffix = os.path.splitext(name)
            if suffix in SUFFIXES:
                names.append(os.path.relpath(os.path.join(folder, stem), _HERE).replace(os.sep, "/"))
    return sorted(names)


def recipe_path(name_or_path) -> str:
    """The file of a recipe: an existing file as given, else a shipped recipe's name.

    Raises:
        ConfigError: neither a file nor a shipped recipe; lists the shipped ones.
    """
    path = os.fspath(name_or_path)
    if os.path.isfile(path):
        return path
    for suffix in SUFFIXES:
        shipped = os.path.join(_HERE, *path.split("/")) + suffix
        if os.path.isfile(shipped):
            return shipped
    known = list_recipes()
    close = difflib.get_close_matches(path, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{path}: no such recipe file, and not a recipe shipped with segzoo ({', '.join(known)})."
                      f"{hint}")


def _loader(path: str):
    """The function that parses the text of ``path``, chosen by its suffix, and the errors it raises."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        return tomllib.loads, (tomllib.TOMLDecodeError,)
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as error:
            raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or write the recipe "
                              f"as TOML.") from error
        return yaml.safe_load, (yaml.YAMLError,)
    if suffix == ".json":
        return json.loads, (ValueError,)
    raise ConfigError(f"{path}: a recipe is a {', '.join(SUFFIXES)} file, not "
                      f"{suffix or 'a file without a suffix'}.")


def _parse_file(path: str) -> dict:
    parse, errors = _loader(path)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        values = parse(raw.decode("utf-8"))
    except (UnicodeDecodeError, *errors) as error:
        raise ConfigError(f"{path}: not a readable recipe ({error}).") from error
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a recipe is a table of settings (name = value), not a {type(values).__name__}.")
    return values


def read_recipe(name_or_path, cls=None) -> dict:
    """The settings of a recipe (a file or a shipped recipe's name), checked against ``cls``.

    Args:
        name_or_path: a ``.toml``, ``.yaml`` or ``.json`` file, or a name from :func:`list_recipes`.
        cls: the dataclass the settings are for (default :class:`segzoo.training.TrainConfig`).

    Returns:
        ``{field name: value}`` with the fields' types (tuples for lists).
    """
    if cls is None:
        from segzoo.training import TrainConfig as cls
    path = recipe_path(name_or_path)
    return check_settings(_parse_file(path), cls, path)
