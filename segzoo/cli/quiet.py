"""Quiet third-party start-up: TensorFlow's and absl's C++ log lines, and known-harmless tracebacks.

TensorFlow prints ``cudart_stub``, ``cpu_feature_guard`` and ``absl::InitializeLog`` lines
straight to file descriptor 2 while it loads, before any Python logging exists, so the
only way to hide them is to load it once with that descriptor pointed elsewhere. What it
wrote there is shown after all when loading fails. LiteRT's notices later on are hidden
the same way (:func:`segzoo.native_output.hide_native_notices`).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from segzoo.native_output import hide_native_notices, native_notices_hidden

#: Loggers of libraries whose warnings are not errors for a segzoo user (tf2onnx's optimizer
#: prints a traceback and still writes a correct graph, which segzoo checks anyway).
NOISY_LOGGERS = ("tensorflow", "absl", "tf2onnx", "h5py", "jax._src.xla_bridge")


def silence_third_party():
    """Load TensorFlow with its C++ start-up lines hidden and turn the noisy loggers down to errors.

    Call before anything imports TensorFlow (or Keras on the TensorFlow backend).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    hide_native_notices()
    if "tensorflow" not in sys.modules:
        with native_notices_hidden():  # shown after all if the import fails
            import tensorflow  # noqa: F401
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # Keras's tf2onnx shim probes np.object, which NumPy answers with a FutureWarning on every export
    warnings.filterwarnings("ignore", message=".*np.object.*", category=FutureWarning)
