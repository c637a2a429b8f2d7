"""One home for "a forward function on runtime X", and for timing one.

Every place that runs a model (evaluation, live prediction, the export check, the
benchmarks) gets its forward function here, under one list of names:

==================  ==============================================================
``keras``           the Keras graph (``tf.function``, ``jax.jit`` or eager PyTorch),
                    batch norm folded into the convolutions; any input size
``keras-xla``       the same, XLA-compiled (TensorFlow)
``keras-mixed16``   the Keras graph in mixed float16 (a GPU only)
``litert``          LiteRT float32 (XNNPACK), exported at the input size
``litert-int8``     LiteRT int8 weights and activations, calibrated on images
``onnx``            ONNX Runtime float32 (CPU)
``onnx-int8``       ONNX Runtime static int8 (QDQ), calibrated on images
``onnx-tensorrt``   ONNX Runtime's TensorRT provider (a GPU with TensorRT only)
==================  ==============================================================

Every runtime takes ``upsample``: ``True`` (default) gives logits at the input
size, ``False`` at the model's output stride (its graph without the final resize,
as the official DDRNet models end; the caller upsamples, e.g. the class map).

The exported runtimes go through :func:`segzoo.export.export_model`, which
checks the file against the Keras model before it is used. ``auto``
(:func:`fastest_forward`) times the float runtimes this machine has on the model,
and the int8 ones too when it has calibration images, and keeps the fastest;
each passed that check (an int8 file: at least 95% of the pixels in the Keras
model's class).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
import weakref

import keras
import numpy as np

from segzoo import folding
from segzoo.configs import RUNTIMES
from segzoo.errors import ConfigError, option

logger = logging.getLogger(__name__)

#: Runtimes that quantise, and so need calibration images.
INT8_RUNTIMES = ("litert-int8", "onnx-int8")
#: What ``auto`` chooses from: the runtimes that compute in float32, on any machine...
AUTO_CANDIDATES = ("keras", "litert", "onnx")
#: ...and, given calibration images, these too (:data:`INT8_RUNTIMES`).
AUTO_INT8_CANDIDATES = INT8_RUNTIMES
#: Exported runtime -> (export format, quantisation).
_EXPORTS = {"litert": ("litert", "none"), "litert-int8": ("litert", "int8"), "onnx": ("onnx", "none"),
            "onnx-int8": ("onnx", "int8"), "onnx-tensorrt": ("onnx", "none")}
_PACKAGES = {"litert": ("ai_edge_litert",), "onnx": ("onnxruntime", "tf2onnx")}


def compiled_forward(model, jit_compile=False, fold_batch_norm=True, upsample=True):
    """The ``keras`` runtime: a compiled function ``images -> logits`` (inference mode) for the active backend.

    TensorFlow: a ``tf.function`` graph (XLA with ``jit_compile``); JAX: ``jax.jit``
    over the model's stateless call; PyTorch: eager under ``torch.no_grad``.
    With ``fold_batch_norm`` (default) it runs a copy of the model with each
    batch norm after a convolution folded into it (:mod:`segzoo.folding`):
    the same outputs, less work per frame. Weights changed in ``model`` later
    are not seen by the returned function then. ``upsample=False``: logits at the
    model's output stride (:meth:`segzoo.models.SegmentationModel.stride_logits`).
    """
    if fold_batch_norm:
        model = folding.fold_batch_norm(model)
    if not upsample:
        from segzoo.export import inference_model

        model = inference_model(model, (None, None), upsample=False)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda x: model(x, training=False), jit_compile=jit_compile,
                           reduce_retracing=True)
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        jitted = jax.jit(lambda t, n, x: model.stateless_call(t, n, x, training=False)[0])
        return lambda x: jitted(trainable, non_trainable, x)
    import torch

    def forward(x):
        with torch.no_grad():
            return model(x, training=False)

    return forward


def measure_latency(model, input_shape=(480, 640, 3), batch_size=1, warmup=10, runs=50,
                    jit_compile=False, forward=None, seed=0, images=None):
    """Wall-clock latency of one forward pass, in milliseconds.

    Each run converts the output to numpy, which waits for the device, so GPU
    time is included. The first ``warmup`` runs (compilation, caches) are not
    counted.

    Args:
        model: the model (used when ``forward`` is None).
        input_shape: ``(H, W, 3)`` of the timed input.
        batch_size: images per run.
        warmup: untimed runs first.
        runs: timed runs.
        jit_compile: TensorFlow only: time the XLA-compiled graph.
        forward: a callable ``images -> outputs`` to time instead of the model's
            compiled forward pass (an exported model's runner, say).
        seed: seed of the random images timed.
        images: the images to time instead (float32 ``(batch_size, *input_shape)``).

    Returns:
        dict with ``median_ms``, ``p90_ms``, ``mean_ms``, ``min_ms``, ``runs``,
        ``warmup``, ``batch_size`` and ``input_shape``.
    """
    if forward is None:
        forward = compiled_forward(model, jit_compile)
    if images is None:
        images = np.random.default_rng(seed).uniform(0, 255, (batch_size, *input_shape)).astype("float32")
    return measure_latencies({"forward": forward}, images, warmup, runs)["forward"]


def measure_latencies(forwards, images, warmup=10, runs=50):
    """Wall-clock latency of several forward functions on the same ``images``, timed in turn.

    Each round runs every function once (starting one further along each round),
    so a machine that slows down or speeds up during the measurement (a shared
    host, a CPU changing its clock) shifts every function alike and their ratios
    hold, where timing one after the other would credit the drift to whichever
    ran when it happened.

    Args:
        forwards: ``{name: callable images -> outputs}``.
        images: float32 ``(B, H, W, 3)``.
        warmup: untimed rounds first.
        runs: timed rounds.

    Returns:
        ``{name: statistics}``, each as :func:`measure_latency` returns them.
    """
    names = list(forwards)
    for _ in range(warmup):
        for name in names:
            keras.ops.convert_to_numpy(forwards[name](images))
    times = {name: [] for name in names}
    for round_ in range(runs):
        for offset in range(len(names)):
            name = names[(round_ + offset) % len(names)]
            start = time.perf_counter()
            keras.ops.convert_to_numpy(forwards[name](images))  # waits for a device
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: _latency_statistics(times[name], warmup, images.shape) for name in names}


def _latency_statistics(times, warmup, shape):
    times = np.array(times)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "mean_ms": float(times.mean()), "min_ms": float(times.min()), "runs": len(times),
            "warmup": warmup, "batch_size": int(shape[0]), "input_shape": list(shape[1:])}



def _has_gpu():
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def is_available(runtime) -> bool:
    """Whether ``runtime`` can run here: its packages are installed (and, for GPU runtimes, a GPU is seen)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}; got {runtime!r}.")
    try:
        for module in _PACKAGES.get(runtime.split("-")[0], ()):
            __import__(module)
    except ImportError:
        return False
    if runtime == "keras-xla":
        return keras.backend.backend() == "tensorflow"
    if runtime == "keras-mixed16":
        return _has_gpu()
    if runtime == "onnx-tensorrt":
        import onnxruntime

        return _has_gpu() and "TensorrtExecutionProvider" in onnxruntime.get_available_providers()
    return True


@dataclasses.dataclass
class Forward:
    """A model ready to run: ``function(images float32 (B, H, W, 3) 0..255) -> logits`` (numpy or tensor).

    Attributes:
        runtime: its name in :data:`RUNTIMES`.
        function: the forward function.
        path: the exported file it runs, or None (Keras runtimes).
        export_report: the :class:`segzoo.export.ExportReport` of that file's check, or None.
    """

    runtime: str
    function: object
    path: str | None = None
    export_report: object = None

    def __call__(self, images):
        return self.function(images)


def _mixed_float16_copy(model):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        half = type(model).from_config(model.get_config())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    half.set_weights(model.get_weights())
    return half


def make_forward(runtime, model, input_size=None, workdir=None, calibration_images=None,
                 check_images=None, upsample=True) -> Forward:
    """``model`` on ``runtime`` (see the module docstring).

    Args:
        runtime: a name of :data:`RUNTIMES`.
        model: a segmentation model (logits out).
        input_size: ``(H, W)`` the exported runtimes are built for (the Keras ones take any size).
        workdir: folder for the exported file (exported runtimes).
        calibration_images: RGB images ``(N, H, W, 3)`` at ``input_size`` for the int8 runtimes.
        check_images: images the export is checked on (default: some calibration images, else random).
        upsample: logits at the input size (default), or ``False``: at the model's output stride.

    Raises:
        ValueError: an unknown runtime, or an exported one without ``input_size``
            and ``workdir`` (or, int8, without calibration images).
        segzoo.errors.ConfigError: a runtime this machine cannot run (a missing package, no GPU).
        segzoo.export.ExportMismatchError: the exported file disagrees with the model.
    """
    if not is_available(runtime):
        raise ConfigError(f"runtime {runtime!r} is not available here (its package, or a GPU, is missing); choose "
                          f"one of {', '.join(name for name in RUNTIMES if is_available(name))}.")
    if runtime == "keras":
        return Forward(runtime, compiled_forward(model, upsample=upsample))
    if runtime == "keras-xla":
        return Forward(runtime, compiled_forward(model, jit_compile=True, upsample=upsample))
    if runtime == "keras-mixed16":
        return Forward(runtime, compiled_forward(_mixed_float16_copy(model), upsample=upsample))
    if input_size is None or workdir is None:
        raise ValueError(f"runtime {runtime!r} exports the model: give input_size and workdir.")
    from segzoo import export

    fmt, quantize = _EXPORTS[runtime]
    height, width = (int(s) for s in input_size)
    suffix = ".tflite" if fmt == "litert" else ".onnx"
    stride = "" if upsample else "_stride"
    path = os.path.join(workdir, f"{model.name}_{runtime}_{height}x{width}{stride}{suffix}")
    report = export.export_model(model, path, fmt, quantize, (height, width),
                                 representative_images=calibration_images, check_images=check_images,
                                 overwrite=True, upsample=upsample,
                                 name=f"runtime {runtime} at {width}x{height}")
    if runtime == "onnx-tensorrt":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"])
        name = session.get_inputs()[0].name
        return Forward(runtime, lambda images: session.run(None, {name: np.asarray(images, np.float32)})[0], path,
                       report)
    return Forward(runtime, export.runner(path, fmt), path, report)


def fastest_forward(model, input_size, workdir, images, candidates=AUTO_CANDIDATES, warmup=2, runs=5,
                    upsample=True, calibration_images=None):
    """The fastest runtime for ``model`` at ``input_size`` on this machine: ``(Forward, {runtime: ms})``.

    Each available candidate is built (an export must pass its check against the
    Keras model on ``images``; one that fails or cannot be built is left out and
    logged), then all are timed in turn on ``images`` ``(B, H, W, 3)``
    (:func:`measure_latencies`): median of ``runs`` after ``warmup``; ``upsample`` and
    ``calibration_images`` (for int8 candidates) as in :func:`make_forward`.

    Raises:
        RuntimeError: no candidate could run the model.
    """
    built = {}
    for runtime in candidates:
        if not is_available(runtime):
            continue
        try:
            built[runtime] = make_forward(runtime, model, input_size, workdir, calibration_images=calibration_images,
                                          check_images=images, upsample=upsample)
        except Exception as error:  # a runtime that cannot run this model is not a choice, not a failure
            logger.info("runtime auto: %s left out (%s: %s)", runtime, type(error).__name__,
                        str(error).splitlines()[0][:120])
    if not built:
        raise RuntimeError(f"runtime auto: none of {', '.join(candidates)} could run the model.")
    timings = {name: statistics["median_ms"] for name, statistics in
               measure_latencies(built, images, warmup, runs).items()}
    best = built[min(timings, key=timings.get)]

    def described(name):
        report = built[name].export_report
        agreement = f", {report.class_agreement:.2%} of pixels as Keras" if report and name in INT8_RUNTIMES else ""
        return f"{name} {timings[name]:.1f} ms{agreement}"

    logger.info("runtime auto: %s, the fastest here at %dx%d of those that agree with the Keras model (%s)",
                best.runtime, input_size[1], input_size[0], "; ".join(map(described, sorted(timings, key=timings.get))))
    return best, timings


def check_calibration(runtime, calibration):
    """Refuse an int8 ``runtime`` without ``calibration`` (images, or where they come from: anything empty is none).

    Raises:
        segzoo.errors.ConfigError: the message names the option to give.
    """
    if runtime in INT8_RUNTIMES and not calibration:
        raise ConfigError(f"runtime {runtime!r} quantises the model to int8 and needs images to calibrate on: "
                          f"give training images ({option('calibration_data')}: an rgb/ + gt/ folder or zip, or a "
                          f"CVAT export).")


class ForwardPerSize:
    """``images -> logits`` of ``model`` on ``runtime``, for batches of any size.

    A Keras runtime takes any size; an exported one is built (and checked
    against Keras on the first batch of that size) once per input size, in a
    temporary folder removed with this object; an int8 one is calibrated on
    ``calibration_images`` resized to that size. ``"auto"`` chooses the runtime on
    the first batch (:func:`fastest_forward`, the int8 runtimes among the
    candidates when there are calibration images); :attr:`chosen_runtime` says which.

    Args:
        model: a segmentation model (logits out).
        runtime: a name of :data:`RUNTIMES`, or ``"auto"``.
        what: what the batches are, for the log line ("frames", "images").
        upsample: logits at the input size (default), or ``False``: at the model's output stride.
        calibration_images: RGB images (a sequence of ``(h, w, 3)`` arrays of any sizes, e.g. training images
            from :func:`segzoo.data.draw_images`) for the int8 runtimes; needed by those.

    Raises:
        segzoo.errors.ConfigError: an int8 runtime without calibration images.
    """

    def __init__(self, model, runtime="keras", what="images", upsample=True, calibration_images=None):
        if runtime != "auto" and runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {('auto', *RUNTIMES)}; got {runtime!r}.")
        calibration_images = [] if calibration_images is None else list(calibration_images)
        check_calibration(runtime, calibration_images)
        self.model, self.what, self.upsample = model, what, upsample
        self.calibration_images = calibration_images
        #: The runtime batches run on: ``runtime``, or what ``"auto"`` chose (None until the first batch).
        self.chosen_runtime = None if runtime == "auto" else runtime
        self._forwards = {}  # input size (None: any) -> Forward
        self._workdir = None

    def __call__(self, images):
        self.prepare(images)
        return self._forwards[self._key(images)](images)

    def prepare(self, images):
        """Build the forward for the size of ``images`` (exported and checked on them; with ``"auto"``, the
        runtimes raced) unless it exists: returns whether it built one. Lets a caller time the build apart."""
        key = self._key(images)
        if key in self._forwards:
            return False
        self._forwards[key] = self._build(images)
        return True

    def _key(self, images):
        any_size = self.chosen_runtime is not None and self.chosen_runtime.startswith("keras")
        return None if any_size else tuple(images.shape[1:3])

    def _build(self, images):
        if self._workdir is None:
            self._workdir = tempfile.mkdtemp(prefix="segzoo-runtime-")
            weakref.finalize(self, shutil.rmtree, self._workdir, True)
        size = tuple(images.shape[1:3])
        images = np.asarray(images, np.float32)
        calibration = None
        if self.calibration_images and (self.chosen_runtime is None or self.chosen_runtime in INT8_RUNTIMES):
            from segzoo.data import resize_images

            calibration = resize_images(self.calibration_images, size)
        if self.chosen_runtime is None:
            candidates = AUTO_CANDIDATES + (AUTO_INT8_CANDIDATES if calibration is not None else ())
            logger.info("runtime auto: timing %s at %dx%d (once)...", ", ".join(candidates), size[1], size[0])
            forward, _ = fastest_forward(self.model, size, self._workdir, images, candidates, upsample=self.upsample,
                                         calibration_images=calibration)
            self.chosen_runtime = forward.runtime
            return forward
        if not self.chosen_runtime.startswith("keras"):
            logger.info("Exporting the model to %s for %dx%d %s (once per size)...", self.chosen_runtime, size[1],
                        size[0], self.what)
        return make_forward(self.chosen_runtime, self.model, size, self._workdir, calibration_images=calibration,
                            check_images=images, upsample=self.upsample)

    @property
    def workdir(self):
        """The temporary folder of the exported files (None before the first export)."""
        return self._workdir
