"""Latency of every preset on every runtime this machine has, beside its cost and the machine's ceiling.

For each preset (default: all) at one resolution (default 640x480) and batch
size (default 1): parameters, GMACs, and wall-clock latency (median and 90th
percentile over --runs runs after --warmup runs, each run waiting for its
output) on each available runtime:

    keras-graph     Keras on TensorFlow, tf.function graph
    keras-xla       the same with jit_compile=True (XLA)
    litert-fp32     LiteRT (XNNPACK), from Model.export
    litert-int8     LiteRT, full int8 weights and activations (calibrated on random images,
                    or on --data images)
    onnxruntime     ONNX Runtime CPU (tf2onnx export; graph optimisations on)
    keras-mixed16   on a GPU only: mixed_float16 Keras graph
    onnx-tensorrt   on a GPU only, where ONNX Runtime has the TensorRT provider

Batch norm: LiteRT's converter and ONNX Runtime fold it into the convolutions
themselves; the Keras runtimes time a copy folded by segzoo
(:func:`segzoo.folding.fold_batch_norm`, as live prediction runs it).

The ceiling: the same run measures this machine's float32 matrix-multiply rate
(TensorFlow, 2048x2048); "of peak" is GMACs x 2 / (GFLOP/s x latency), the share of
that rate the model's arithmetic reaches.

With --checkpoint and --data, each exported runtime is also scored (mean IoU on
the held-out images of --data), so the cost of int8 in accuracy is measured in
the same run.

Examples:

    python benchmarks/latency.py                          # every preset, 640x480, batch 1
    python benchmarks/latency.py --presets ddrnet23_slim --runs 100 --output results/ddrnet
    python benchmarks/latency.py --checkpoint runs/q/checkpoints/best.keras --data runs/q/data/heldout
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

RUNTIMES = ("keras-graph", "keras-xla", "litert-fp32", "litert-int8", "onnxruntime")


def matmul_gflops(size=2048, repeats=5):
    """This machine's float32 matrix-multiply rate (GFLOP/s), best of ``repeats``.

    Measured with TensorFlow's matmul (oneDNN on x86), the kernels the Keras
    graph runs on; numpy's OpenBLAS can be slowed by this workplace's
    OPENBLAS_CORETYPE setting.
    """
    import tensorflow as tf

    a, b = (tf.random.stateless_normal((size, size), seed=(0, i)) for i in range(2))
    matmul = tf.function(tf.linalg.matmul)
    matmul(a, b).numpy()
    best = min(_timed(lambda: matmul(a, b).numpy()) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def _timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _available(runtime, gpus):
    if runtime.startswith("litert"):
        try:
            import ai_edge_litert  # noqa: F401
        except ImportError:
            return False
    if runtime == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
            import tf2onnx  # noqa: F401
        except ImportError:
            return False
    if runtime in ("keras-mixed16", "onnx-tensorrt") and not gpus:
        return False
    if runtime == "onnx-tensorrt":
        import onnxruntime

        return "TensorrtExecutionProvider" in onnxruntime.get_available_providers()
    return True


def _forward(runtime, model, shape, workdir, calibration):
    """A callable images -> outputs for ``runtime``, and the exported file (or None)."""
    from segzoo import evaluation, export

    if runtime == "keras-graph":
        return evaluation.compiled_forward(model), None
    if runtime == "keras-xla":
        return evaluation.compiled_forward(model, jit_compile=True), None
    if runtime == "keras-mixed16":
        import keras

        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            half = type(model).from_config(model.get_config())
        finally:
            keras.mixed_precision.set_global_policy("float32")
        half.set_weights(model.get_weights())
        return evaluation.compiled_forward(half), None
    if runtime.startswith("litert"):
        quantize = "int8" if runtime == "litert-int8" else "none"
        path = os.path.join(workdir, f"{model.name}_{quantize}.tflite")
        export.export_model(model, path, "litert", quantize, shape[:2], representative_images=calibration,
                            check_images=calibration[:2])
        return export.runner(path, "litert"), path
    path = os.path.join(workdir, f"{model.name}.onnx")
    export.export_model(model, path, "onnx", input_size=shape[:2], check_images=calibration[:2])
    if runtime == "onnx-tensorrt":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"])
        name = session.get_inputs()[0].name
        return (lambda images: session.run(None, {name: np.asarray(images, np.float32)})[0]), path
    return export.runner(path, "onnx"), path


def _score(forward, model, data_source, shape):
    """Mean IoU of ``forward`` on the held-out images of ``data_source`` at ``shape``."""
    from segzoo import data, evaluation, postprocess

    info = data.load_info(data_source)
    dataset = data.load(data_source, "all", batch_size=1, image_size=shape[:2], shuffle=False)
    names = model.class_names or postprocess.output_class_names(model.num_classes, info.class_names)
    return evaluation.evaluate_segmentation(model, dataset, names, forward=forward, progress=False)["mean_iou"]


def benchmark_preset(name, args, gflops_rate, workdir, gpus):
    """Rows of the table for one preset (or the --checkpoint model)."""
    from segzoo import data, evaluation, inference, presets
    from segzoo.utils import count_flops, count_params

    shape = (*args.size, 3)
    if args.checkpoint:
        model = inference.load_model(args.checkpoint)
    else:
        model = presets.from_name(name, num_classes=args.num_classes)
    gmacs = count_flops(model, shape) / 1e9
    params = count_params(model)
    if args.data:
        calibration = data.sample_images(data.open_dataset(args.data), args.calibration_images, args.size)
    else:
        calibration = np.random.default_rng(0).uniform(0, 255, (args.calibration_images, *shape)).astype(np.float32)
    rows = []
    for runtime in args.runtimes:
        if not _available(runtime, gpus):
            continue
        row = {"preset": name, "runtime": runtime, "params_m": params / 1e6, "gmacs": gmacs}
        try:
            forward, path = _forward(runtime, model, shape, workdir, calibration)
            runs = max(args.runs // 5, 10) if runtime == "keras-xla" and not gpus else args.runs
            row.update(evaluation.measure_latency(model, shape, args.batch_size, args.warmup, runs, forward=forward))
            row["of_peak"] = gmacs * 2 / (gflops_rate * row["median_ms"] / 1000.0)
            if path:
                row["file_mb"] = os.path.getsize(path) / 1e6
            if args.checkpoint and args.data:
                row["mean_iou"] = _score(forward, model, args.data, shape)
        except Exception as error:  # one runtime failing must not hide the others
            row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
        rows.append(row)
        print(_format_row(row), flush=True)
    return rows


def _format_row(row):
    if "error" in row:
        return f"| `{row['preset']}` | {row['runtime']} | failed: {row['error']} |"
    cells = [f"`{row['preset']}`", row["runtime"], f"{row['params_m']:.2f}", f"{row['gmacs']:.2f}",
             f"{row['median_ms']:.1f}", f"{row['p90_ms']:.1f}", f"{row['of_peak']:.0%}"]
    if "mean_iou" in row:
        cells.append(f"{row['mean_iou']:.4f}")
    return "| " + " | ".join(cells) + " |"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", help="presets to time (default: all)")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"),
                        help="input height and width (default: 480 640)")
    parser.add_argument("--batch_size", type=int, default=1, help="images per run (default: 1)")
    parser.add_argument("--num_classes", type=int, default=2, help="classes of the timed models (default: 2)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per runtime (default: 50)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs first (default: 10)")
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES) + ["keras-mixed16", "onnx-tensorrt"],
                        help="runtimes to try (default: all available)")
    parser.add_argument("--checkpoint", help="time (and score) this trained .keras model instead of presets")
    parser.add_argument("--data", help="rgb/ + gt/ folder: calibration images, and held-out images to score on")
    parser.add_argument("--calibration_images", type=int, default=16, help="int8 calibration images (default: 16)")
    parser.add_argument("--output", help="write <output>.md and <output>.json")
    args = parser.parse_args(argv)

    from segzoo import evaluation, presets

    machine = evaluation.machine_description()
    names = args.presets or ([os.path.basename(args.checkpoint)] if args.checkpoint else presets.list_presets())
    rate = matmul_gflops()
    header = (f"{time.strftime('%Y-%m-%d')}: {machine['cpu']}, {machine['cores']} cores, "
              f"{machine.get('threads', '?')} TensorFlow threads, GPUs: {machine['gpus'] or 'none'}; "
              f"float32 matmul {rate:.0f} GFLOP/s; input {args.size[1]}x{args.size[0]}, batch {args.batch_size}, "
              f"median and p90 of {args.runs} runs after {args.warmup} warm-up runs")
    columns = "| preset | runtime | params (M) | GMACs | median (ms) | p90 (ms) | of peak |"
    columns += " mean IoU |" if args.checkpoint and args.data else ""
    print(header)
    print("\n" + columns + "\n" + "|---" * (columns.count("|") - 1) + "|")
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in names:
            rows += benchmark_preset(name, args, rate, workdir, machine["gpus"])
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output + ".json", "w", encoding="utf-8") as f:
            json.dump({"machine": machine, "matmul_gflops": rate, "header": header, "rows": rows}, f, indent=2)
        with open(args.output + ".md", "w", encoding="utf-8") as f:
            f.write(header + "\n\n" + columns + "\n" + "|---" * (columns.count("|") - 1) + "|\n")
            f.writelines(_format_row(row) + "\n" for row in rows)


if __name__ == "__main__":
    main()
