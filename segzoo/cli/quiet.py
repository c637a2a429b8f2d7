"""Quiet third-party start-up: TensorFlow's and absl's C++ log lines, and known-harmless tracebacks.

TensorFlow prints ``cudart_stub``, ``cpu_feature_guard`` and ``absl::InitializeLog`` lines
straight to file descriptor 2 while it loads, before any Python logging exists, so the
only way to hide them is to load it once with that descriptor pointed elsewhere. What it
wrote there is shown after all when loading fails.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

#: Loggers of libraries whose warnings are not errors for a segzoo user (tf2onnx's optimizer
#: prints a traceback and still writes a correct graph, which segzoo checks anyway).
NOISY_LOGGERS = ("tensorflow", "absl", "tf2onnx", "h5py", "jax._src.xla_bridge")


def silence_third_party():
    """Load TensorFlow with its C++ start-up lines hidden and turn the noisy loggers down to errors.

    Call before anything imports TensorFlow (or Keras on the TensorFlow backend).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if "tensorflow" not in sys.modules:
        _import_with_stderr_hidden("tensorflow")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _import_with_stderr_hidden(module):
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor 2 (an embedded interpreter): import as is
        __import__(module)
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            __import__(module)
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
