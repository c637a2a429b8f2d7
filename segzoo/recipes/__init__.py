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

import dataclasses
import difflib
import json
import os
import typing

from segzoo.errors import ConfigError

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


def _describe(kind) -> str:
    origin = typing.get_origin(kind) or kind
    if origin is tuple:
        items = typing.get_args(kind)
        if items and items[-1] is not Ellipsis:
            return f"a list of {len(items)} {items[0].__name__} values"
        return f"a list of {items[0].__name__} values"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(kind, str(kind))


def _scalar(kind, value):
    """``value`` as ``kind``, or raise ``TypeError``."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif callable(kind):  # a field's own parser, e.g. a number or "auto"
        try:
            return kind(value)
        except (TypeError, ValueError):
            pass
    raise TypeError(value)


def _coerce(field, kind, value):
    if value is None:
        return None
    origin = typing.get_origin(kind) or kind
    if origin is tuple:
        items = typing.get_args(kind)
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if items and items[-1] is not Ellipsis and len(values) != len(items):
            raise TypeError(value)
        parse = field.metadata.get("type", items[0])
        return tuple(_scalar(parse, v) for v in values)
    value = _scalar(kind, value)
    choices = field.metadata.get("choices")
    if choices and value not in choices:
        raise TypeError(value)
    return value


def check_settings(values: dict, cls, source: str) -> dict:
    """``values`` checked against the fields of dataclass ``cls`` and converted to their types.

    Lists become tuples, whole numbers become floats where a float is expected.

    Raises:
        ConfigError: an unknown name (with the closest field) or a value of the
            wrong type, naming ``source`` (a file), the setting and the fix.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    checked = {}
    for name, value in values.items():
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f"Did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{source}: {name!r} is not a setting of {cls.__name__}. {hint}The settings are the "
                              f"flags of the command, without the dashes.")
        try:
            checked[name] = _coerce(fields[name], hints[name], value)
        except TypeError:
            choices = fields[name].metadata.get("choices")
            expected = f"one of {', '.join(choices)}" if choices else _describe(hints[name])
            raise ConfigError(f"{source}: {name} = {value!r}: expected {expected}.") from None
    return checked


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
