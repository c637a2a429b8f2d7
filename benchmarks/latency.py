"""Latency of every preset on every runtime this machine has, beside its cost and the machine's ceiling.

For each preset (default: all) at one resolution (default 640x480) and batch
size (default 1): parameters, GMACs, and wall-clock latency (median and 90th
percentile over --runs runs after --warmup runs, each run waiting for its
output) on each available runtime. The runtimes of a preset and the official
model are timed in turn, one run each per round, so a machine whose speed drifts
during the run (a shared host) shifts them alike and their ratios hold:

    keras           Keras on TensorFlow, tf.function graph
    keras-xla       the same with jit_compile=True (XLA)
    litert          LiteRT float32 (XNNPACK), from Model.export
    litert-int8     LiteRT, full int8 weights and activations (calibrated on random images,
                    or on --data images)
    onnx            ONNX Runtime CPU float32 (tf2onnx export; graph optimisations on)
    onnx-int8       ONNX Runtime CPU, static int8 (QDQ, per-channel weights), calibrated likewise
    keras-mixed16   on a GPU only: mixed_float16 Keras graph
    onnx-tensorrt   on a GPU only, where ONNX Runtime has the TensorRT provider

(the names of segzoo.runtime, which builds each one). With --official (the default
when PyTorch is installed), the first row is the official DDRNet-23-slim
architecture (the PyTorch reference of tests/test_weights.py, random weights)
exported with torch.onnx and run on ONNX Runtime with the same threads: the
yardstick every other row is read against.

Batch norm: LiteRT's converter and ONNX Runtime fold it into the convolutions
themselves; the Keras runtimes time a copy folded by segzoo
(:func:`segzoo.folding.fold_batch_norm`, as live prediction runs it).

The ceiling: the same run measures this machine's matrix-multiply rate, best of
several kernels and sizes: float32 with TensorFlow (oneDNN), numpy and PyTorch
where installed, 1024 to 4096 square; int8 (u8 x s8 -> s32) with ONNX Runtime's
MatMulInteger. "of peak" is GMACs x 2 / (rate x latency), the share of that rate
the model's arithmetic reaches: int8 rows against the int8 rate.

Where the graphs end (--outputs): "input", logits resized to the input size
(what segzoo's models return; the official model gets the same bilinear resize),
and/or "stride", logits at the output stride (1/8 for DDRNet, where the official
model ends; segzoo's graphs without their final resize, as `segzoo export
--no_upsample` writes them and `--argmax_at_stride` runs them live).

With --checkpoint and --data, each exported runtime is also scored (mean IoU on
the held-out images of --data), so the cost of int8 in accuracy is measured in
the same run.

Examples:

    python benchmarks/latency.py                          # every preset, 640x480, batch 1
    python benchmarks/latency.py --presets ddrnet23_slim --runs 100 --output results/ddrnet
    python benchmarks/latency.py --checkpoint runs/q/checkpoints/best.keras --data runs/q/data/heldout
    python benchmarks/latency.py --presets ddrnet23_slim --outputs input stride
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np

from segzoo.cli.arguments import add_boolean_argument, add_checkpoint_argument

OFFICIAL = "official ddrnet23_slim"


def _timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _best_rate(multiply, size, repeats):
    """GFLOP/s of ``multiply()`` (one ``size`` cube product), best of ``repeats`` after one warm-up."""
    multiply()
    return 2 * size ** 3 / min(_timed(multiply) for _ in range(repeats)) / 1e9


def float32_gemm_rates(sizes=(1024, 2048, 4096), repeats=5):
    """``{kernel at size: GFLOP/s}`` of float32 matrix products on this machine, per available kernel."""
    import tensorflow as tf

    rates = {}
    for size in sizes:
        a, b = (tf.random.stateless_normal((size, size), seed=(0, i)) for i in range(2))
        matmul = tf.function(tf.linalg.matmul)
        rates[f"TensorFlow {size}"] = _best_rate(lambda: matmul(a, b).numpy(), size, repeats)
        x, y = a.numpy(), b.numpy()
        rates[f"numpy {size}"] = _best_rate(lambda: x @ y, size, repeats)
        try:
            import torch
        except ImportError:
            continue
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        rates[f"PyTorch {size}"] = _best_rate(lambda: tx @ ty, size, repeats)
    return rates


def int8_gemm_rates(sizes=(1024, 2048), repeats=5):
    """``{kernel at size: GOP/s}`` of u8 x s8 -> s32 matrix products in ONNX Runtime (MatMulInteger)."""
    try:
        import onnxruntime
        from onnx import TensorProto, helper

        from segzoo.export import onnx_session_options
    except ImportError:
        return {}
    rates = {}
    for size in sizes:
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "gemm",
            [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size]),
             helper.make_tensor_value_info("b", TensorProto.INT8, [size, size])],
            [helper.make_tensor_value_info("c", TensorProto.INT32, [size, size])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        session = onnxruntime.InferenceSession(model.SerializeToString(), onnx_session_options(),
                                               providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = {"a": rng.integers(0, 255, (size, size), dtype=np.uint8),
                 "b": rng.integers(-127, 127, (size, size), dtype=np.int8)}
        rates[f"ONNX Runtime MatMulInteger {size}"] = _best_rate(lambda: session.run(None, feeds), size, repeats)
    return rates


def official_forward(workdir, shape, num_classes, upsample=True):
    """The official DDRNet-23-slim (PyTorch reference, random weights) on ONNX Runtime: ``images -> logits``.

    Normalisation is left out of the graph, as in the official code (it happens in
    its data loader); with ``upsample`` the output is resized to the input size, as
    segzoo's is, else it stays at stride 8, where the official model ends.
    """
    import onnxruntime
    import torch

    from segzoo.export import onnx_session_options

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from test_weights import official_model

    class Upsampled(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            logits = self.model(x)["logits"]
            if not upsample:
                return logits
            return torch.nn.functional.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)

    path = os.path.join(workdir, f"official_ddrnet23_slim_{'input' if upsample else 'stride'}.onnx")
    with warnings.catch_warnings():  # the TorchScript exporter, deprecated, still the one without onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(Upsampled(official_model("ddrnet23_slim", num_classes)).eval(),
                          torch.zeros(1, 3, *shape[:2]), path, dynamo=False, input_names=["images"], opset_version=17)
    session = onnxruntime.InferenceSession(path, onnx_session_options(), providers=["CPUExecutionProvider"])
    return lambda images: session.run(None, {"images": np.ascontiguousarray(
        np.asarray(images, np.float32).transpose(0, 3, 1, 2))})[0], path


def _error_text(error):
    """One line for a row that failed: the exception's type and the first line of its message."""
    return f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"


def _score(forward, model, data_source, shape, upsample=True):
    """Mean IoU of ``forward`` on the held-out images of ``data_source`` at ``shape``; logits at the output
    stride (``upsample=False``) are resized to the image bilinearly first, as the model's own graph does."""
    import keras

    from segzoo import data, evaluation, postprocess

    if not upsample:
        at_stride = forward

        def forward(images):
            return keras.ops.image.resize(at_stride(images), tuple(images.shape[1:3]))
    info = data.load_info(data_source)
    dataset = data.load(data_source, "all", batch_size=1, image_size=shape[:2], shuffle=False)
    names = model.class_names or postprocess.output_class_names(model.num_classes, info.class_names)
    return evaluation.evaluate_segmentation(model, dataset, names, forward=forward, progress=False)["mean_iou"]


def benchmark_preset(name, args, ceilings, workdir, official=()):
    """Rows of the table for one preset (or the --checkpoint model), the official rows first.

    Every runtime is built first, then all of them and the ``official`` ones
    (``[(row, forward)]`` from :func:`official_entry`) are timed in turn
    (:func:`segzoo.runtime.measure_latencies`), so drift of the machine during the run
    does not bias their ratios; then each exported runtime is scored.
    ``ceilings``: ``{"float32"|"int8": GOP/s}``.
    """
    from segzoo import data, inference, presets, runtime
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
    entries = [(dict(row), forward) for row, forward in official]
    for output, name_of_runtime in ((o, r) for o in args.outputs for r in args.runtimes):
        if not runtime.is_available(name_of_runtime):
            continue
        row = {"preset": name, "runtime": name_of_runtime, "output": output, "params_m": params / 1e6,
               "gmacs": gmacs}
        forward = None
        try:
            forward = runtime.make_forward(name_of_runtime, model, shape[:2], workdir, calibration_images=calibration,
                                           check_images=calibration[:2], upsample=output == "input")
            if forward.path:
                row["file_mb"] = os.path.getsize(forward.path) / 1e6
        except Exception as error:  # one runtime failing must not hide the others
            row["error"] = _error_text(error)
        entries.append((row, forward))
    images = np.random.default_rng(0).uniform(0, 255, (args.batch_size, *shape)).astype(np.float32)
    timed = runtime.measure_latencies({i: forward for i, (_, forward) in enumerate(entries) if forward is not None},
                                      images, args.warmup, args.runs)
    rows = []
    for i, (row, forward) in enumerate(entries):
        if i in timed:
            row.update(timed[i])
            rate = ceilings["int8" if row["runtime"] in runtime.INT8_RUNTIMES else "float32"]
            row["of_peak"] = row["gmacs"] * 2 / (rate * row["median_ms"] / 1000.0) if rate else None
            if args.checkpoint and args.data and row["preset"] != OFFICIAL:
                try:
                    row["mean_iou"] = _score(forward, model, args.data, shape, upsample=row["output"] == "input")
                except Exception as error:
                    row["error"] = _error_text(error)
        rows.append(row)
        print(_format_row(row), flush=True)
    return rows


def _format_row(row):
    """One markdown table row."""
    runtime = row["runtime"] + (", at stride" if row.get("output") == "stride" else "")
    if "error" in row:
        return f"| `{row['preset']}` | {runtime} | failed: {row['error']} |"
    cells = [f"`{row['preset']}`", runtime, f"{row['params_m']:.2f}", f"{row['gmacs']:.2f}",
             f"{row['median_ms']:.1f}", f"{row['p90_ms']:.1f}",
             "n/a" if row.get("of_peak") is None else f"{row['of_peak']:.0%}"]
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
    parser.add_argument("--runtimes", nargs="+", help="runtimes to try, names of segzoo.runtime.RUNTIMES "
                                                      "(default: every available one)")
    add_boolean_argument(parser, "--official", default=None,
                         help="time the official DDRNet-23-slim on ONNX Runtime first (default: when PyTorch is "
                              "installed)")
    add_checkpoint_argument(parser, required=False,
                            help="time (and score) this trained .keras model instead of presets")
    parser.add_argument("--data", help="rgb/ + gt/ folder: calibration images, and held-out images to score on")
    parser.add_argument("--calibration_images", type=int, default=16, help="int8 calibration images (default: 16)")
    parser.add_argument("--outputs", nargs="+", choices=("input", "stride"), default=["input"],
                        help="where the timed graphs end: logits resized to the input size, and/or at the "
                             "output stride, where the official model ends (default: input)")
    parser.add_argument("--output", help="write <output>.md and <output>.json")
    args = parser.parse_args(argv)

    from segzoo.cli.quiet import silence_third_party

    silence_third_party()  # TensorFlow's start-up lines and tf2onnx's harmless optimiser tracebacks
    from segzoo import evaluation, presets, runtime

    args.runtimes = args.runtimes or list(runtime.RUNTIMES)
    if args.official is None:
        args.official = importlib.util.find_spec("torch") is not None
    machine = evaluation.machine_description()
    names = args.presets or ([os.path.basename(args.checkpoint)] if args.checkpoint else presets.list_presets())
    float32_rates, int8_rates = float32_gemm_rates(), int8_gemm_rates()
    ceilings = {"float32": max(float32_rates.values()), "int8": max(int8_rates.values(), default=None)}
    best = {kind: max(rates, key=rates.get) for kind, rates in (("float32", float32_rates), ("int8", int8_rates))
            if rates}
    header = (f"{time.strftime('%Y-%m-%d')}: {machine['cpu']} ({evaluation.describe_vector_extensions(machine)}), "
              f"{machine['cores']} cores, {machine.get('threads', '?')} TensorFlow threads, GPUs: "
              f"{machine['gpus'] or 'none'}; ceiling: float32 {ceilings['float32']:.0f} GFLOP/s ({best['float32']})"
              + (f", int8 {ceilings['int8']:.0f} GOP/s ({best['int8']})" if ceilings["int8"] else "")
              + f"; input {args.size[1]}x{args.size[0]}, batch {args.batch_size}, median and p90 of {args.runs} runs "
              f"after {args.warmup} warm-up runs")
    columns = "| preset | runtime | params (M) | GMACs | median (ms) | p90 (ms) | of peak |"
    columns += " mean IoU |" if args.checkpoint and args.data else ""
    print(header)
    print("\n" + columns + "\n" + "|---" * (columns.count("|") - 1) + "|")
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        official = [official_entry(args, workdir, upsample=output == "input")
                    for output in (args.outputs if args.official else ())]
        for name in names:
            rows += benchmark_preset(name, args, ceilings, workdir, official)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output + ".json", "w", encoding="utf-8") as f:
            json.dump({"machine": machine, "gemm_rates": {"float32": float32_rates, "int8": int8_rates},
                       "header": header, "rows": rows}, f, indent=2)
        with open(args.output + ".md", "w", encoding="utf-8") as f:
            f.write(header + "\n\n" + columns + "\n" + "|---" * (columns.count("|") - 1) + "|\n")
            f.writelines(_format_row(row) + "\n" for row in rows)


def official_entry(args, workdir, upsample=True):
    """``(row, forward)`` of the official DDRNet-23-slim on ONNX Runtime (see :func:`official_forward`), to be
    timed beside each preset; ``forward`` is None (and the row says why) where it cannot be built."""
    from segzoo import presets
    from segzoo.utils import count_flops, count_params

    shape = (*args.size, 3)
    ours = presets.from_name("ddrnet23_slim", num_classes=args.num_classes)  # the same architecture's cost
    row = {"preset": OFFICIAL, "runtime": "onnx (torch.onnx)", "output": "input" if upsample else "stride",
           "params_m": count_params(ours) / 1e6, "gmacs": count_flops(ours, shape) / 1e9}
    try:
        forward, _ = official_forward(workdir, shape, args.num_classes, upsample)
    except Exception as error:  # the yardstick failing must not hide segzoo's rows
        row["error"] = _error_text(error)
        forward = None
    return row, forward


if __name__ == "__main__":
    main()
