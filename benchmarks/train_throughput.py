"""Training throughput: images per second of one optimiser step of each preset.

Each preset is compiled as segzoo trains it (cross-entropy, AdamW, the
auxiliary head where the preset has one) and timed on random batches at
--size after --warmup steps; the step includes the forward pass, the loss,
the backward pass and the update. Prints a markdown table; --output writes JSON.

Example:

    python benchmarks/train_throughput.py --presets ddrnet23_slim --batch_size 8 --size 480 640
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def train_step_time(preset="ddrnet23_slim", image_size=(480, 640), batch_size=8, warmup=3, steps=10,
                    num_classes=2):
    """Median seconds of one training step of ``preset`` on random ``(batch_size, *image_size, 3)`` batches."""
    from segzoo import presets
    from segzoo.training import make_loss, make_optimizer

    model = presets.from_name(preset, num_classes=num_classes)
    model.compile(optimizer=make_optimizer("adamw", 1e-3, weight_decay=1e-4), loss=make_loss("ce", num_classes))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, *image_size, 3)).astype(np.float32)
    labels = rng.integers(0, num_classes, (batch_size, *image_size)).astype(np.int32)
    for _ in range(warmup):
        model.train_on_batch(images, labels)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(images, labels)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", help="presets to time (default: all)")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"),
                        help="image height and width (default: 480 640)")
    parser.add_argument("--batch_size", type=int, default=8, help="images per step (default: 8)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default: 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args(argv)

    from segzoo import evaluation, presets

    machine = evaluation.machine_description()
    print(f"{time.strftime('%Y-%m-%d')}: {machine['cpu']}, {machine['cores']} cores, GPUs: {machine['gpus'] or 'none'}; "
          f"{args.size[1]}x{args.size[0]}, batch {args.batch_size}, median of {args.steps} steps\n")
    print("| preset | step (s) | images/s |\n|---|---|---|")
    rows = []
    for name in args.presets or presets.list_presets():
        seconds = train_step_time(name, tuple(args.size), args.batch_size, args.warmup, args.steps)
        rows.append({"preset": name, "step_seconds": seconds, "images_per_second": args.batch_size / seconds})
        print(f"| `{name}` | {seconds:.3f} | {args.batch_size / seconds:.1f} |", flush=True)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump({"machine": machine, "size": args.size, "batch_size": args.batch_size, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
