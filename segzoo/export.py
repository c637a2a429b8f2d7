"""Export through ``keras.Model.export``, then prove the exported file agrees with the Keras model.

Formats: TensorFlow SavedModel (``"saved_model"``), LiteRT (``"litert"``:
float32, float16 weights, or int8 with a representative set) and ONNX
(``"onnx"``: float32, or int8 by ONNX Runtime's static quantisation). The exported graph takes what the Keras model takes (float32 RGB
0..255, NHWC) and normalises inside itself. LiteRT graphs have a fixed size
(batch 1, ``input_size``), which is what XNNPACK runs fastest. SavedModel and
ONNX graphs take any batch, height and width (multiples of the model's size
divisor): tf2onnx turns a fixed-size resize into a scale factor (5 / 3 for a
3 -> 5 upsampling) from which ONNX Runtime computes a size one pixel short,
while a resize to a size read from the input's shape converts exactly. With
``output="classes"`` it ends in the argmax (or sigmoid threshold) and returns
int32 class ids, with ``"probabilities"`` the softmax.

After writing a file, :func:`export_model` runs it on real images with its own
runtime (``tf.saved_model``, the LiteRT interpreter, ONNX Runtime), compares
with the Keras model and raises :class:`ExportMismatchError` when they
disagree: a wrong export (keras-hub issue 2495) never passes unnoticed.

TensorRT: build an engine for one size from the ONNX file (``trtexec
--onnx=model.onnx --shapes=images:1x480x640x3 --saveEngine=model.plan --fp16``)
or run it through ONNX Runtime's TensorRT execution provider; see the README.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os

import keras
import numpy as np

from segzoo import onnx_rewrites, postprocess
from segzoo.configs import FORMATS, OUTPUTS, QUANTIZATIONS
from segzoo.errors import SegzooError
from segzoo.files import atomic_write, check_output
from segzoo.native_output import native_notices_hidden

logger = logging.getLogger(__name__)

#: The ONNX operators ``quantize="int8"`` computes in int8 (see :func:`_quantize_onnx`); the rest stay float.
ONNX_INT8_OPERATORS = ("Conv", "MatMul", "Gemm")
#: The quantisations each format takes.
FORMAT_QUANTIZATIONS = {"saved_model": ("none",), "litert": QUANTIZATIONS, "onnx": ("none", "int8")}
#: Least share of pixels whose class must agree with the Keras model, per quantisation.
MIN_AGREEMENT = {"none": 0.999, "float16": 0.99, "int8": 0.95}
#: Largest difference of logits allowed, relative to their range, without quantisation.
MAX_RELATIVE_ERROR = 1e-3


class ExportMismatchError(SegzooError, RuntimeError):
    """The exported file's outputs disagree with the Keras model's."""


@contextlib.contextmanager
def _tf2onnx_collecting_garbage():
    """Free tf2onnx's discarded graph copies between its optimisers.

    tf2onnx deep-copies the whole graph, weights included, before each optimiser
    pass; the copies form reference cycles that wait for the garbage collector,
    so exporting ``pidnet_l`` peaked at 14 GB of memory (4 GB with a collection
    before each pass). The optimisers and their order are unchanged.

    Everything alive before the export is frozen (``gc.freeze``) while it runs,
    so each collection scans only what tf2onnx made since: a full collection of
    a process holding TensorFlow and a few models takes 0.2-2 s, and tf2onnx
    runs two dozen passes. A process that froze objects of its own keeps them
    frozen: ``gc.unfreeze`` cannot release only ours, so then nothing is frozen.
    """
    try:
        from tf2onnx import optimizer
    except ImportError:  # Keras reports the missing package itself
        yield
        return
    factories = optimizer._get_optimizers

    def collecting():
        def collect_first(factory):
            def make():
                gc.collect()
                return factory()
            return make
        return {name: collect_first(factory) for name, factory in factories().items()}

    optimizer._get_optimizers = collecting
    freezing = gc.get_freeze_count() == 0
    if freezing:
        gc.freeze()
    try:
        yield
    finally:
        if freezing:
            gc.unfreeze()
        optimizer._get_optimizers = factories


@keras.saving.register_keras_serializable(package="segzoo")
class Postprocess(keras.layers.Layer):
    """Logits to ``"probabilities"`` or ``"classes"`` (see :mod:`segzoo.postprocess`), inside a graph."""

    def __init__(self, output="classes", **kwargs):
        super().__init__(**kwargs)
        if output not in ("probabilities", "classes"):
            raise ValueError(f"output must be 'probabilities' or 'classes'; got {output!r}.")
        self.kind = output

    def call(self, logits):
        if self.kind == "classes":
            return postprocess.classes(logits)
        return postprocess.probabilities(logits)

    def get_config(self):
        return {**super().get_config(), "output": self.kind}


def inference_model(model, input_size, output="logits", batch_size=None, upsample=True):
    """A functional model of fixed input size around ``model``, for export.

    Args:
        model: the segmentation model.
        input_size: ``(H, W)``, multiples of ``model.size_divisor``, or ``(None, None)``
            for a graph of any size.
        output: ``"logits"``, ``"probabilities"`` or ``"classes"``.
        batch_size: fixed batch size, or None for any.
        upsample: end with the model's resize to the input size (default); ``False`` ends at its output
            stride (:meth:`segzoo.models.SegmentationModel.stride_logits`), ``(B, H / s, W / s, ...)``.
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}.")
    inputs = keras.Input((*input_size, 3), batch_size=batch_size, name="images")
    outputs = model(inputs, training=False) if upsample else model.stride_logits(inputs)
    if output != "logits":
        outputs = Postprocess(output, name=output)(outputs)
    return keras.Model(inputs, outputs, name=f"{model.name}_inference")


@dataclasses.dataclass
class ExportReport:
    """What an export wrote and how well it agrees with the Keras model."""

    path: str
    format: str
    quantize: str
    output: str
    input_size: tuple
    upsample: bool
    max_abs_error: float
    max_relative_error: float
    class_agreement: float
    size_bytes: int

    def summary(self, name=None):
        """One line for people, naming the file as ``name`` (default: its path)."""
        at = "" if self.upsample else ", at the output stride"
        return (f"{name or self.path} ({self.format}, {self.quantize}{at}, {self.size_bytes / 1e6:.1f} MB): class "
                f"agreement {self.class_agreement:.4%}, max |difference| {self.max_abs_error:.3g} "
                f"({self.max_relative_error:.2e} of the output range)")


def onnx_session_options():
    """The ``onnxruntime.SessionOptions`` segzoo runs ONNX files with: every core, and no spin-waiting.

    ONNX Runtime's worker threads spin after each operator, waiting for the
    next, unless told not to. On 2 cores that steals time from the thread doing
    the work and from whatever else runs (the live loop's decoding and drawing,
    another runtime): DDRNet-23-slim at 640x480 on 2 Zen 4 cores took 69-77 ms in
    float32 and 33-37 ms in int8 with spinning, 61 and 28 ms without.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def runner(path, format):
    """A function ``images float32 (B, H, W, 3) -> numpy outputs`` running an exported file."""
    path = os.fspath(path)
    if format == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)  # keep a reference: it owns the variables
        return lambda images: np.asarray(loaded.serve(tf.constant(images)))
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, onnx_session_options(), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda images: session.run(None, {name: np.asarray(images, np.float32)})[0]
    if format == "litert":
        with native_notices_hidden():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
            interpreter = _litert_interpreter(path)
            interpreter.allocate_tensors()
        input_detail = interpreter.get_input_details()[0]
        output_detail = interpreter.get_output_details()[0]

        def run(images):
            outputs = []
            for image in np.asarray(images, np.float32):  # the graph has batch 1
                interpreter.set_tensor(input_detail["index"], image[None])
                interpreter.invoke()
                outputs.append(interpreter.get_tensor(output_detail["index"])[0])
            return np.stack(outputs)

        return run
    raise ValueError(f"format must be one of {FORMATS}; got {format!r}.")


def _litert_interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # TensorFlow's copy, deprecated but present in TF 2.x
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=path, num_threads=os.cpu_count())


def _litert_options(quantize, representative_images):
    import tensorflow as tf

    if quantize == "none":
        return {}
    if quantize == "float16":
        return {"optimizations": [tf.lite.Optimize.DEFAULT],
                "target_spec": {"supported_types": [tf.float16]}}
    def representative_dataset():
        for image in representative_images:
            yield [np.asarray(image, np.float32)[None]]

    return {"optimizations": [tf.lite.Optimize.DEFAULT], "representative_dataset": representative_dataset}


class _ImageReader:
    """ONNX Runtime's calibration protocol over representative images: one ``{input: (1, H, W, 3)}`` at a time."""

    def __init__(self, input_name, images):
        self._feeds = iter([{input_name: np.asarray(image, np.float32)[None]} for image in images])

    def get_next(self):
        return next(self._feeds, None)


def _quantize_onnx(path, representative_images):
    """Replace the float ONNX file ``path`` by its int8 version (QDQ, calibrated on ``representative_images``).

    Static quantisation as ONNX Runtime runs it fastest on x86: u8 activations,
    s8 weights per output channel, min-max calibration, and only the
    convolutions (and matrix products) in int8. Quantising the additions,
    resizes and concatenations between them as well adds a quantise/dequantise
    pair around each that costs more than it saves: DDRNet-23-slim at 640x480 on
    2 Zen 4 cores took 25.1 ms with every operator quantised, 19.9 ms with
    convolutions, additions and ReLUs, 14.6 ms with convolutions only (float32:
    28.3 ms), with the same class agreement (99.99%).

    Weights use 7 bits (``reduce_range``): without VNNI, ONNX Runtime's u8 x s8
    kernels add pairs of products in 16 bits, which saturate with 8-bit weights,
    so one file would give other classes on an AVX2 CPU than on an AVX-512 VNNI
    one (DDRNet-23-slim: 99.972% against 99.983% of pixels as in float32). With 7
    bits both give 99.982%.

    The classifier (:func:`segzoo.onnx_rewrites.classifier_convolutions`) stays
    in float: its logits keep their precision, and the resize after it keeps the
    NCHW layout, where ONNX Runtime's float resize is fast. Quantised, ONNX Runtime
    moves that resize to NHWC, where it is slow: in one profile of DDRNet-23-slim's
    int8 graph at 640x480 (2 Zen 4 cores) the operators took 32.8 ms with the
    classifier in float against 37.9 with it quantised (the resize 1.2 against
    2.7 ms, the dequantisations 3.6 against 6.8).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = f"{path}.prepared.onnx"
    try:
        quant_pre_process(path, prepared, skip_symbolic_shape=True)
        graph = onnx.load(prepared, load_external_data=False)
        quantize_static(prepared, path, _ImageReader(graph.graph.input[0].name, representative_images),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=ONNX_INT8_OPERATORS, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, reduce_range=True,
                        nodes_to_exclude=onnx_rewrites.classifier_convolutions(graph))
    finally:
        if os.path.exists(prepared):
            os.remove(prepared)


def compare_outputs(expected, actual, output, quantize):
    """Differences between Keras outputs and an exported file's: (max abs, max relative, class agreement)."""
    expected, actual = np.asarray(expected), np.asarray(actual)
    if expected.shape != actual.shape:
        raise ExportMismatchError(f"output shape {actual.shape} differs from the Keras model's {expected.shape}.")
    difference = np.abs(expected.astype(np.float64) - actual.astype(np.float64))
    scale = max(float(np.ptp(expected)), 1e-6)
    if output == "classes":
        expected_classes, actual_classes = expected, actual
    else:
        expected_classes = np.asarray(postprocess.classes(expected)) if output == "logits" else expected.argmax(-1)
        actual_classes = np.asarray(postprocess.classes(actual)) if output == "logits" else actual.argmax(-1)
    agreement = float(np.mean(expected_classes == actual_classes))
    return float(difference.max()), float(difference.max() / scale), agreement


def export_model(model, path, format="litert", quantize="none", input_size=(480, 640), output="logits",
                 representative_images=None, check_images=None, overwrite=False, upsample=True, name=None):
    """Export ``model`` to ``path`` and check the file against the Keras model.

    Args:
        model: a segmentation model.
        path: output file (``.tflite``, ``.onnx``) or folder (SavedModel).
        format: ``"saved_model"``, ``"litert"`` or ``"onnx"``.
        quantize: ``"none"``, LiteRT ``"float16"`` / ``"int8"``, or ONNX ``"int8"``.
        input_size: ``(H, W)`` of a LiteRT graph, and of the images the check
            runs on for every format.
        output: ``"logits"``, ``"probabilities"`` or ``"classes"`` (argmax inside).
        representative_images: RGB images ``(H, W, 3)`` at ``input_size`` for int8
            calibration (draw them from the training data).
        check_images: float32 images ``(N, H, W, 3)`` to compare on; default: the
            representative images, else random ones (real images are a better check).
        overwrite: replace an existing ``path``. The export is written beside
            ``path`` and moved into place once it is complete and checked; a
            file that disagrees with the model is left at
            ``<path>.mismatch<ext>`` for inspection, never at ``path``.
        upsample: the graph ends with the resize to the input size (default); ``False``: at the model's output
            stride, as the official DDRNet models do (the caller upsamples, e.g. the class map after the argmax).
        name: what the logged check line calls the file (default: ``path``; a caller exporting into a
            temporary folder names what the file is for).

    Returns:
        :class:`ExportReport`.

    Raises:
        ExportMismatchError: the exported file disagrees with the Keras model
            (class agreement under ``MIN_AGREEMENT[quantize]`` or, unquantised,
            logits off by more than ``MAX_RELATIVE_ERROR`` of their range).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r}.")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}; got {quantize!r}.")
    if quantize not in FORMAT_QUANTIZATIONS[format]:
        raise ValueError(f"quantize={quantize!r} does not apply to {format}; choose one of "
                         f"{FORMAT_QUANTIZATIONS[format]}.")
    if quantize == "int8" and (representative_images is None or len(representative_images) == 0):
        raise ValueError("int8 quantisation needs representative images (a few dozen training images).")
    input_size = tuple(int(s) for s in input_size)
    divisor = model.size_divisor
    if any(s % divisor for s in input_size):
        raise ValueError(f"input_size {input_size} must be multiples of {divisor} for this model.")
    path = os.fspath(path)
    suffix = {"litert": ".tflite", "onnx": ".onnx"}.get(format)
    if suffix and not path.endswith(suffix):
        raise ValueError(f"{path}: a {format} export needs a file name ending in {suffix}.")
    check_output(path, overwrite=overwrite)

    if check_images is None:
        check_images = (np.stack([np.asarray(i, np.float32) for i in representative_images[:4]])
                        if representative_images is not None and len(representative_images)
                        else np.random.default_rng(0).uniform(0, 255, (2, *input_size, 3)).astype(np.float32))
    check_images = np.asarray(check_images, np.float32)
    if format == "litert":
        graph = inference_model(model, input_size, output, batch_size=1, upsample=upsample)
    else:  # any size: see the module docstring
        graph = inference_model(model, (None, None), output, upsample=upsample)
    # Run the graph first: the ONNX exporter requires a model that has been called.
    expected = np.concatenate([keras.ops.convert_to_numpy(graph(image[None])) for image in check_images])
    with atomic_write(path, folder=format == "saved_model") as temporary:
        if format == "litert":
            with native_notices_hidden():  # the quantiser's "fully_quantize: 0, inference_type: 6, ..."
                graph.export(temporary, format="litert", verbose=False,
                             **_litert_options(quantize, representative_images))
        elif format == "onnx":
            with _tf2onnx_collecting_garbage():
                graph.export(temporary, format="onnx", verbose=False)
            onnx_rewrites.rewrite_file(temporary)
            if quantize == "int8":
                _quantize_onnx(temporary, representative_images)
        else:
            graph.export(temporary, format="tf_saved_model", verbose=False)
        actual = runner(temporary, format)(check_images)
        max_abs, max_rel, agreement = compare_outputs(expected, actual, output, quantize)
        size = (os.path.getsize(temporary) if os.path.isfile(temporary)
                else sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(temporary) for f in fs))
        report = ExportReport(path, format, quantize, output, input_size, upsample, max_abs, max_rel, agreement,
                              size)
        logger.info("%s", report.summary(name))
        exact_enough = quantize != "none" or output == "classes" or max_rel <= MAX_RELATIVE_ERROR
        if agreement < MIN_AGREEMENT[quantize] or not exact_enough:
            stem, ext = os.path.splitext(path)
            kept = f"{stem}.mismatch{ext}"
            os.replace(temporary, kept)
            raise ExportMismatchError(f"The exported file disagrees with the Keras model: {report.summary()}. "
                                      f"Expected class agreement >= {MIN_AGREEMENT[quantize]:.1%}"
                                      + ("" if quantize != "none" else f" and relative error <= {MAX_RELATIVE_ERROR}")
                                      + f". Not written to {path}; the file is kept as {kept} for inspection.")
    return report
