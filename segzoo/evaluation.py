"""Evaluation: mean IoU over a split, model size and cost, latency, and pictures for people.

* :func:`evaluate_segmentation`: streaming confusion matrix over a dataset ->
  mean IoU, per-class IoU, pixel accuracy; optionally with test-time
  augmentation (:mod:`segzoo.tta`: flips, scales, sliding windows).
* :func:`measure_latency` (from :mod:`segzoo.runtime`): wall-clock latency of
  the compiled forward pass (batch norm folded), after warm-up, device
  synchronised, median and 90th percentile.
* :func:`evaluation_report` joins both with parameters and GFLOPs (and the
  scores with test-time augmentation beside the single-pass ones);
  :func:`format_report` prints it as a table.
* :func:`prediction_rows` / :func:`save_visualizations`: image | truth | prediction | confidence.
"""

from __future__ import annotations

import dataclasses
import os
import platform

import cv2
import keras
import numpy as np
from tqdm.auto import tqdm

from segzoo import postprocess
from segzoo import tta as tta_module
from segzoo.constants import IGNORE_INDEX
from segzoo.metrics import MeanIoU
from segzoo.runtime import ForwardPerSize, compiled_forward, measure_latency
from segzoo.utils import count_flops, count_params


def pad_to_divisor(forward, divisor):
    """``forward`` (``images (B, H, W, 3) -> logits``) for images of any size.

    Images whose height or width is not a multiple of ``divisor`` are padded at
    the bottom and right (edge pixels repeated, as segmentation toolkits do at
    test time) and the logits are cropped back to ``(B, H, W, K)``; others run
    as they are. Lets a model that needs multiples of 32 be scored on CamVid's
    360x480 images at their own resolution.
    """
    def run(images):
        height, width = images.shape[1:3]
        pad_h, pad_w = -height % divisor, -width % divisor
        if not (pad_h or pad_w):
            return forward(images)
        padded = np.pad(np.asarray(images), ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        return keras.ops.convert_to_numpy(forward(padded))[:, :height, :width]

    return run


def _averaged_logits(model, forward, tta, counter):
    """``images -> logits`` of the probabilities :func:`segzoo.tta.predict_probabilities` averages over the
    passes of ``tta``; ``counter["passes"]`` adds up the images (or windows) the model runs on."""

    def probabilities(images):
        counter["passes"] += len(images)
        return keras.ops.convert_to_numpy(postprocess.probabilities(forward(images)))

    def logits(images):
        averaged = tta_module.predict_probabilities(probabilities, images, tta, model.size_divisor)
        return postprocess.logits_from_probabilities(averaged, model.num_classes)

    return logits


def evaluate_segmentation(model, dataset, class_names, ignore_index=IGNORE_INDEX, forward=None,
                          progress=True, tta=None):
    """Mean IoU, per-class IoU and pixel accuracy of ``model`` over ``dataset``.

    Args:
        model: a segmentation model (logits out).
        dataset: iterable of ``(images float32 (B, H, W, 3) 0..255, labels int (B, H, W))``.
        class_names: one name per class (2 for a binary model: background, object).
        ignore_index: label value that counts for nothing.
        forward: ``images -> logits`` to use instead of the compiled model.
        progress: show a progress bar.
        tta: a :class:`segzoo.tta.TestTimeAugmentation`: score the probabilities averaged over its
            flipped, rescaled or windowed passes instead of one pass.

    Returns:
        dict: ``mean_iou``, ``per_class_iou`` (name -> IoU, None for a class absent
        from truth and prediction), ``pixel_accuracy``, ``confusion_matrix`` (rows =
        truth), ``num_images``; with ``tta`` also ``settings`` (its fields) and
        ``forward_passes_per_image`` (model runs, on an image or a window, per image).
    """
    num_classes = postprocess.num_output_classes(model.num_classes)
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a model predicting {num_classes} classes.")
    forward = pad_to_divisor(forward or compiled_forward(model), model.size_divisor)
    counter = {"passes": 0}
    if tta is not None:
        forward = _averaged_logits(model, forward, tta, counter)
    metric = MeanIoU(num_classes=num_classes, ignore_index=ignore_index)
    num_images = 0
    for images, labels in tqdm(dataset, desc="evaluating" if tta is None else "evaluating with TTA", unit="batch",
                               disable=not progress):
        metric.update_state(labels, forward(images))
        num_images += int(images.shape[0])
    confusion = metric.confusion_matrix()
    per_class = metric.per_class_iou()
    result = {
        "mean_iou": float(metric.result()),
        "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, per_class)},
        "pixel_accuracy": float(np.trace(confusion) / max(confusion.sum(), 1)),
        "confusion_matrix": confusion.tolist(),
        "num_images": num_images,
    }
    if tta is not None:
        result.update(settings=dataclasses.asdict(tta), forward_passes_per_image=counter["passes"] / max(num_images, 1))
    return result


#: ``/proc/cpuinfo`` flag -> the name of numpy's own CPUID check of it (what programs are told they may use).
_NUMPY_CPU_FEATURES = {"avx2": "AVX2", "fma": "FMA3", "avx512f": "AVX512F", "avx512_vnni": "AVX512VNNI",
                       "avx512_bf16": "AVX512BF16"}


def cpu_vector_extensions(hidden=False):
    """The CPU's wide vector extensions that decide its speed here (``avx2``, ``avx512f``, ``avx512_vnni``,
    ``amx_*``, ``neon``...): the ``/proc/cpuinfo`` flags that CPUID also offers to programs (numpy's runtime
    check; a hypervisor or a CPUID mask can hide one). ``hidden=True``: the flags the kernel lists that
    programs are not offered instead. Empty where ``/proc/cpuinfo`` cannot be read."""
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8",
              "amx_bf16", "asimd", "asimddp", "sve")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith(("flags", "Features"))), [])
    except OSError:
        return []
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as offered
    except ImportError:  # another numpy layout: trust the kernel's list
        offered = {}
    listed = [flag for flag in wanted if flag in flags]
    usable = [flag for flag in listed if offered.get(_NUMPY_CPU_FEATURES.get(flag), True)]
    return [flag for flag in listed if flag not in usable] if hidden else usable


def describe_vector_extensions(machine) -> str:
    """``"avx2, fma"`` of a :func:`machine_description`, plus the extensions hidden from programs, if any."""
    text = ", ".join(machine.get("vector_extensions") or []) or "no AVX"
    if machine.get("hidden_vector_extensions"):
        text += f"; {', '.join(machine['hidden_vector_extensions'])} listed by the kernel but hidden from programs"
    return text


def machine_description():
    """CPU model, cores, TensorFlow threads and GPUs of this machine, for reports."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    description = {"cpu": cpu, "vector_extensions": cpu_vector_extensions(),
                   "hidden_vector_extensions": cpu_vector_extensions(hidden=True), "cores": os.cpu_count(),
                   "backend": keras.backend.backend(), "gpus": []}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        description["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
        description["threads"] = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    return description


def evaluation_report(model, dataset, class_names, input_shape=(480, 640, 3), latency_runs=50,
                      latency_warmup=10, ignore_index=IGNORE_INDEX, tta=None, runtime="keras", calibration_images=None):
    """Accuracy over ``dataset`` plus parameters, GFLOPs and batch-1 latency at ``input_shape``.

    ``runtime`` (:mod:`segzoo.runtime`, or ``"auto"``) runs both the scoring and
    the timing: an exported runtime is exported and checked once per input size
    (an int8 one calibrated on ``calibration_images``, RGB training images of any
    sizes); the report's ``runtime`` says which ran.

    With ``tta`` (a :class:`segzoo.tta.TestTimeAugmentation`), the scores with it too, under ``"tta"``:
    ``mean_iou``, ``per_class_iou``, ``pixel_accuracy``, ``settings`` and ``forward_passes_per_image``
    (what it costs; the latency stays that of one pass).
    """
    if tta is not None:
        tta.check(model.size_divisor)  # before any work
    forward = compiled_forward(model) if runtime == "keras" else ForwardPerSize(  # one for all
        model, runtime, calibration_images=calibration_images)
    report = evaluate_segmentation(model, dataset, class_names, ignore_index, forward=forward)
    if tta is not None:
        scored = evaluate_segmentation(model, dataset, class_names, ignore_index, forward=forward, tta=tta)
        report["tta"] = {key: scored[key] for key in ("mean_iou", "per_class_iou", "pixel_accuracy", "settings",
                                                      "forward_passes_per_image")}
    report.update(
        parameters=count_params(model),
        gflops=count_flops(model, input_shape) / 1e9,
        latency=measure_latency(model, input_shape, runs=latency_runs, warmup=latency_warmup, forward=forward),
        machine=machine_description(),
        runtime=getattr(forward, "chosen_runtime", runtime),
    )
    return report


def format_report(report) -> str:
    """The report as a plain-text table: per-class IoU, then the summary lines; with a ``"tta"`` entry
    (:func:`evaluation_report`), its scores in a second column and a line on what it costs."""
    tta = report.get("tta")
    width = max(len(label) for label in [*report["per_class_iou"], "pixel accuracy"]) + 1  # the values line up

    def score(value):
        return "n/a" if value is None else f"{value:.4f}"

    def line(label, single, augmented):
        return f"{label:<{width}} {single}" if tta is None else f"{label:<{width}} {single:<7} {augmented}"

    rule = "-" * (width + (17 if tta else 9))
    lines = [line("class", "IoU", "TTA IoU"), rule]
    for name, iou in report["per_class_iou"].items():
        lines.append(line(name, score(iou), tta and score(tta["per_class_iou"][name])))
    lines += [rule, line("mean IoU", score(report["mean_iou"]), tta and score(tta["mean_iou"])),
              line("pixel accuracy", score(report["pixel_accuracy"]), tta and score(tta["pixel_accuracy"]))]
    if "num_images" in report:
        lines.append(f"{'images':<{width}} {report['num_images']}")
    if "parameters" in report:
        latency = report["latency"]
        shape = latency["input_shape"]
        lines += [f"{'parameters':<{width}} {report['parameters'] / 1e6:.2f} M",
                  f"{'GFLOPs':<{width}} {report['gflops']:.2f} (multiply-adds, {shape[1]}x{shape[0]})",
                  f"{'latency':<{width}} {latency['median_ms']:.1f} ms median, {latency['p90_ms']:.1f} ms p90 "
                  f"(batch {latency['batch_size']}, {latency['runs']} runs"
                  + (f", {report['runtime']})" if report.get("runtime", "keras") != "keras" else ")")]
    if tta:
        lines.append(f"{'TTA':<{width}} {tta_module.cost(tta)}")
    return "\n".join(lines)


def prediction_rows(model, dataset, colors, max_images=16, ignore_index=IGNORE_INDEX):
    """Yield ``(image, truth overlay, prediction overlay, top-class probability)`` for the first images.

    Images and overlays are RGB ``uint8 (H, W, 3)``; the probability is ``float32 (H, W)`` in 0..1.
    """
    from segzoo.data.overlay import overlay_label

    forward = compiled_forward(model)
    count = 0
    for images, labels in dataset:
        logits = forward(images)
        predicted = keras.ops.convert_to_numpy(postprocess.classes(logits)).astype(np.uint8)
        confidence = keras.ops.convert_to_numpy(postprocess.probabilities(logits)).max(axis=-1)
        for image, label, prediction, top in zip(np.asarray(images), np.asarray(labels), predicted, confidence):
            image = np.clip(image, 0, 255).astype(np.uint8)
            yield (image, overlay_label(image, label.astype(np.uint8), colors, ignore_index),
                   overlay_label(image, prediction, colors, ignore_index), top)
            count += 1
            if count >= max_images:
                return


def _confidence_map(confidence):
    """Viridis colour map of a top-class probability ``(H, W)`` in 0..1, RGB uint8."""
    gray = np.clip(confidence * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)


def save_visualizations(model, dataset, colors, output_dir, max_images=16, ignore_index=IGNORE_INDEX):
    """Write ``image | truth | prediction | confidence`` PNGs, pixel for pixel, for the first ``max_images`` images.

    Returns the list of written paths.
    """
    from segzoo.data.io import write_image

    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for image, truth, prediction, confidence in prediction_rows(model, dataset, colors, max_images, ignore_index):
        path = os.path.join(output_dir, f"{len(paths):04d}.png")
        write_image(path, np.concatenate([image, truth, prediction, _confidence_map(confidence)], axis=1))
        paths.append(path)
    return paths
