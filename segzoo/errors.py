"""The mistakes a user can make and fix: one base class, and how a message names an option.

Every error a person can act on (bad data, a checkpoint that does not fit, an export
that disagrees with its model, an output that exists, a bad configuration) derives from
:class:`SegzooError`. The ``segzoo`` command prints such an error as one message and
exits with status 2; anything else is a bug and keeps its traceback.

Messages name options through :func:`option`, so the same message says ``images=``
to a Python caller and ``--images`` to someone at the command line.
"""

from __future__ import annotations

import contextlib
import contextvars

_COMMAND_LINE = contextvars.ContextVar("segzoo_command_line", default=False)


class SegzooError(Exception):
    """A mistake in what the user handed over; the message names the file, the value and the fix."""


class ConfigError(SegzooError, ValueError):
    """A configuration (flags, a recipe file, a resumed run's settings) that cannot be used as given."""


class OutputExistsError(SegzooError, FileExistsError):
    """An output path that already exists (refused unless overwriting was asked for) or that is an input."""


class OutputNotWritableError(SegzooError, PermissionError):
    """An output folder that cannot be written (checked before the work starts)."""


class DownloadError(SegzooError, OSError):
    """A file that segzoo downloads on first use (pretrained weights) that could not be downloaded."""


def option(name: str, value=None) -> str:
    """How a message names the option ``name`` (set to ``value`` when given): ``--name [value]`` under
    the command line, else ``name=`` (or ``name='value'``)."""
    if _COMMAND_LINE.get():
        return f"--{name}" if value is None else f"--{name} {value}"
    return f"{name}=" if value is None else f"{name}={value!r}"


def switch(name: str) -> str:
    """How a message names the on/off option ``name``, turned on: ``--name`` under the command line, else
    ``name=True``."""
    return f"--{name}" if _COMMAND_LINE.get() else f"{name}=True"


@contextlib.contextmanager
def command_line_messages():
    """Within this block, :func:`option` names command-line flags."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)
