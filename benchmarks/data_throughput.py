"""Data throughput: how many images per second segzoo's input pipeline delivers.

Generates an ``rgb/`` + ``gt/`` folder in a temporary directory (default 64
JPEG images of 640x480, three classes), then measures, in wall-clock time
after warm-up:

- ``segzoo.data.load`` with online augmentation (random scale and crop to
  640x480, flip, colour jitter), batch 8, repeated;
- the same without augmentation (decode, check, batch);
- offline augmentation, ``segzoo.data.augment.augment_dataset``: images
  written per second (originals and copies);
- the time of one training step of ddrnet23_slim at the same size
  (``benchmarks/train_throughput.py``), so the table shows whether the
  pipeline keeps the model fed.

Prints a markdown table; ``--output results.json`` also writes the numbers.
Example::

    python benchmarks/data_throughput.py --num_images 64 --timed_images 400 --output data.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from train_throughput import train_step_time  # noqa: E402  (this folder's sibling script)

from segzoo.data.augment import AugmentConfig, augment_dataset  # noqa: E402
from segzoo.data.folder import FolderWriter, SegmentationFolder  # noqa: E402


def make_folder(root, num_images, height, width, image_format, seed):
    """Write ``num_images`` smooth random images with block labels (3 classes) to ``root``."""
    rng = np.random.default_rng(seed)
    writer = FolderWriter(root, ["background", "hole", "crack"], [(0, 0, 0), (255, 0, 0), (0, 255, 0)],
                          image_format=image_format)
    for index in range(num_images):
        coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3)).astype(np.uint8)
        image = np.kron(coarse, np.ones((16, 16, 1), np.uint8))[:height, :width]
        image = np.clip(image.astype(np.int16) + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
        blocks = rng.choice(3, size=(height // 32 + 1, width // 32 + 1), p=[0.8, 0.1, 0.1])
        label = np.kron(blocks, np.ones((32, 32), np.int64))[:height, :width].astype(np.uint8)
        writer.write(f"img_{index:04d}", image, label)
    return root


def time_pipeline(dataset, batch_size, warmup_batches, timed_images):
    """Images per second of an infinite ``dataset`` of batches, after ``warmup_batches``."""
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        next(iterator)
    batches = max(1, -(-timed_images // batch_size))
    start = time.perf_counter()
    for _ in range(batches):
        images, _ = next(iterator)
    images.numpy()
    seconds = time.perf_counter() - start
    return {"images": batches * batch_size, "seconds": seconds, "images_per_second": batches * batch_size / seconds}


def time_offline(folder, output_dir, copies, workers):
    """Images written per second by ``augment_dataset`` (originals and ``copies`` copies of each)."""
    start = time.perf_counter()
    augment_dataset(SegmentationFolder(folder), output_dir, config=AugmentConfig(copies=copies), workers=workers)
    seconds = time.perf_counter() - start
    written = len(SegmentationFolder(output_dir))
    return {"images": written, "seconds": seconds, "images_per_second": written / seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--num_images", type=int, default=64, help="images generated in the folder")
    parser.add_argument("--height", type=int, default=480, help="image height, pixels")
    parser.add_argument("--width", type=int, default=640, help="image width, pixels")
    parser.add_argument("--image_format", default=".jpg", choices=(".jpg", ".png"), help="format of the images")
    parser.add_argument("--batch_size", type=int, default=8, help="images per batch")
    parser.add_argument("--warmup_batches", type=int, default=5, help="batches read before timing")
    parser.add_argument("--timed_images", type=int, default=400, help="images timed (rounded up to batches)")
    parser.add_argument("--offline_copies", type=int, default=2, help="augmented copies per image, offline")
    parser.add_argument("--offline_workers", type=int, default=1, help="worker processes of offline augmentation")
    parser.add_argument("--skip_offline", action="store_true", help="do not time offline augmentation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data and the pipeline")
    parser.add_argument("--output", help="write the results as JSON to this file")
    args = parser.parse_args(argv)

    from segzoo.data.online_augment import OnlineAugment
    from segzoo.data.pipeline import load

    image_size = (args.height, args.width)
    results = []
    with tempfile.TemporaryDirectory(prefix="segzoo_data_throughput_") as tmp:
        folder = make_folder(os.path.join(tmp, "data"), args.num_images, args.height, args.width,
                             args.image_format, args.seed)
        for name, augment in (("online augmentation (tf.data)", OnlineAugment()), ("no augmentation (tf.data)", None)):
            dataset = load(folder, batch_size=args.batch_size, image_size=image_size, augment=augment,
                           repeat=True, drop_remainder=True, seed=args.seed)
            results.append({"name": name, **time_pipeline(dataset, args.batch_size, args.warmup_batches,
                                                          args.timed_images)})
        if args.skip_offline:
            results.append({"name": "offline augmentation (skipped)", "images": 0, "seconds": None,
                            "images_per_second": None})
        else:
            results.append({"name": f"offline augmentation ({args.offline_workers} worker(s))",
                            **time_offline(folder, os.path.join(tmp, "augmented"), args.offline_copies,
                                           args.offline_workers)})
    step = train_step_time("ddrnet23_slim", image_size=image_size, batch_size=args.batch_size)
    results.append({"name": "ddrnet23_slim training step", "images": args.batch_size, "seconds": step,
                    "images_per_second": args.batch_size / step})

    print(f"\n{args.num_images} generated {args.image_format} images, {args.width}x{args.height}, "
          f"batch {args.batch_size}, {os.cpu_count()} CPU(s)\n")
    print("| stage | images | seconds | images/s |\n|---|---|---|---|")
    for row in results:
        seconds = "n/a" if row["seconds"] is None else f"{row['seconds']:.2f}"
        rate = "n/a" if row["images_per_second"] is None else f"{row['images_per_second']:.1f}"
        print(f"| {row['name']} | {row['images']} | {seconds} | {rate} |")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump({"settings": vars(args), "machine": {"platform": platform.platform(),
                                                           "cpu_count": os.cpu_count()},
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
