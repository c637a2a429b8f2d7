"""segzoo: a Keras 3 model zoo for real-time binary and semantic segmentation on custom data.

Submodules load on first use, so ``import segzoo`` stays cheap::

    import segzoo
    model = segzoo.presets.from_name("ddrnet23_slim", num_classes=2)
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "backbones", "checkpoints", "cli", "configs", "constants", "data", "distributed", "errors", "evaluation",
    "export", "files", "folding", "heads", "inference", "keras_internals", "layers", "losses", "metrics",
    "models", "native_output", "onnx_rewrites", "plots", "postprocess", "prediction", "presets", "quickstart",
    "recipes", "report", "runtime", "schedules", "settings", "time_budget", "training", "tta", "utils",
    "weight_average", "weights",
)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"segzoo.{name}")
    raise AttributeError(f"module 'segzoo' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
