"""Settings dataclasses: the field helper behind every config that is also a set of flags.

A config (``TrainConfig``, ``QuickstartConfig``, ...) declares each field with
:func:`config_field`, which stores its ``help`` text, and optionally ``choices``,
``metavar`` or a tuple item ``type``, in the field's metadata.
:func:`segzoo.cli.arguments.add_dataclass_arguments` reads that metadata to make
one flag per field. :func:`check_settings` checks settings read from a file
(a recipe, a saved run) against such a dataclass. This module imports only
:mod:`segzoo.errors`, so library modules can use it without importing the
command line package.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing

from segzoo.errors import ConfigError

__all__ = ["check_settings", "config_field"]


def config_field(default, help, **metadata):
    """A dataclass field with ``default`` whose metadata holds ``help`` and any other ``metadata``."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


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
