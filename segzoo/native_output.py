"""What C and C++ libraries print straight to file descriptor 2, kept from the user's terminal.

TensorFlow's start-up lines and OpenCV's FFmpeg codec-tag notices bypass Python's
``sys.stderr`` and logging; :func:`captured_stderr` points the descriptor at a
temporary file for the length of a block and hands back what was written, so the
caller can show it when something went wrong.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


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
