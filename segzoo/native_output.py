"""What C and C++ libraries print straight to file descriptor 2, kept from the user's terminal.

TensorFlow's start-up lines and OpenCV's FFmpeg codec-tag notices bypass Python's
``sys.stderr`` and logging; :func:`captured_stderr` points the descriptor at a
temporary file for the length of a block and hands back what was written, so the
caller can show it when something went wrong. :func:`native_notices_hidden` uses it
for notices that say nothing to a user (LiteRT's "Created TensorFlow Lite XNNPACK
delegate", its quantiser's settings line) once :func:`hide_native_notices` is on,
as the ``segzoo`` command turns it on unless ``--verbose``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

_HIDE_NOTICES = False


@contextlib.contextmanager
def captured_stderr():
    """Within the block, descriptor 2 writes to a temporary file; yields a function returning its text so far.

    Where there is no real descriptor 2 (an embedded interpreter), nothing is captured.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield lambda: ""
        return
    with tempfile.TemporaryFile() as captured:
        def text():
            captured.flush()
            captured.seek(0)
            return captured.read().decode(errors="replace")

        os.dup2(captured.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def hide_native_notices(hide=True):
    """Turn on (or off) the hiding of :func:`native_notices_hidden` blocks, for the whole process."""
    global _HIDE_NOTICES
    _HIDE_NOTICES = bool(hide)


@contextlib.contextmanager
def native_notices_hidden():
    """Within the block, what C and C++ libraries print to descriptor 2 is hidden, when
    :func:`hide_native_notices` is on; if the block raises, it is written out after all."""
    if not _HIDE_NOTICES:
        yield
        return
    written = ""
    try:
        with captured_stderr() as captured:
            try:
                yield
            except BaseException:
                written = captured()
                raise
    except BaseException:
        sys.stderr.write(written)
        raise
