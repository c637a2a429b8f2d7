"""Flags from dataclasses (one flag per field, so every option a script has is an argument); logging setup.

A field's ``metadata`` holds its ``help`` text and, optionally, ``choices``,
``metavar`` and, for a tuple field, the ``type`` that parses each value.
Booleans become ``--flag`` / ``--no-flag`` pairs; ``tuple[int, int]`` fields
take two values (``--image_size 480 640``), ``tuple[float, ...]`` one or more.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import typing

def add_dataclass_arguments(parser, cls, group_title=None, skip=(), only_given=False):
    """Add one ``--<field>`` flag per field of dataclass ``cls`` to ``parser`` (except ``skip``).

    With ``only_given``, the parsed namespace holds only the flags that were
    typed (see :func:`given_fields`), so that they can override settings from
    elsewhere (a recipe file, a saved run); ``--help`` still shows the defaults.
    """
    target = parser.add_argument_group(group_title) if group_title else parser
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        kind, default = hints[field.name], field.default
        help_text = field.metadata.get("help", "")
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        kwargs = {"default": argparse.SUPPRESS if only_given else default,
                  "help": f"{help_text} (default: {shown})"}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif (typing.get_origin(kind) or kind) is tuple:
            item_types = typing.get_args(kind)  # (int, int) or (float, ...)
            fixed = bool(item_types) and item_types[-1] is not Ellipsis
            metavar = field.metadata.get("metavar") or (
                ("LOW", "HIGH") if fixed and len(item_types) == 2 else field.name.upper())
            kwargs.update(nargs=len(item_types) if fixed else "+", type=field.metadata.get("type", item_types[0]),
                          metavar=metavar)
        else:
            kwargs.update(type=kind, choices=field.metadata.get("choices"))
        target.add_argument(f"--{field.name}", **kwargs)
    return parser


def given_fields(cls, args) -> dict:
    """``{field: value}`` of the fields of dataclass ``cls`` present in parsed ``args`` (lists as tuples)."""
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return {name: tuple(v) if isinstance(v, list) else v for name, v in fields.items()}


def dataclass_from_args(cls, args, **values):
    """An instance of ``cls`` from parsed ``args`` (fields absent from ``args`` keep defaults), plus ``values``."""
    return cls(**{**given_fields(cls, args), **values})


def setup_logging(verbose=False):
    """Log segzoo's progress lines (INFO) plainly, and only warnings from other libraries."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("segzoo").setLevel(logging.DEBUG if verbose else logging.INFO)
