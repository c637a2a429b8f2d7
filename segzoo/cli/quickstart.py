"""segzoo's main job end to end, on a generated sample or on your own CVAT export.

Without --cvat it generates a small CVAT "Segmentation mask 1.1" export of
holes and cracks on textured surfaces, then: imports it, augments it offline
(background replacement included), builds a TFDS dataset, trains a model,
evaluates it on unseen images, predicts on a video and exports to LiteRT with
a check of the exported file. Everything lands in --out:

    metrics.json, training_curves.png, predictions.png, prediction.webm, model.tflite, checkpoints/

Examples:

    segzoo quickstart --out runs/quickstart
    segzoo quickstart --fast --out runs/quick_look
    segzoo quickstart --cvat my_export.zip --images my_images/ --out runs/mine
"""

import json
import os

from segzoo.cli.arguments import add_dataclass_arguments, dataclass_from_args
from segzoo.configs import QuickstartConfig

#: Files the quickstart promises, listed at the end when they exist.
OUTPUTS = ("report.html", "metrics.json", "training_curves.png", "predictions.png", "prediction.webm", "model.tflite",
           "checkpoints/best.keras")


def add_arguments(parser):
    add_dataclass_arguments(parser, QuickstartConfig)


def run(args):
    from segzoo.quickstart import run_quickstart

    report = run_quickstart(dataclass_from_args(QuickstartConfig, args))
    out = os.path.abspath(args.out)
    print("\n" + "=" * 60)
    print(f"held-out mean IoU: {report['mean_iou']:.3f}   per class: "
          + json.dumps({k: None if v is None else round(v, 3) for k, v in report["per_class_iou"].items()}))
    print(f"{report['parameters'] / 1e6:.2f} M parameters, {report['gflops']:.2f} GFLOPs, "
          f"{report['latency']['median_ms']:.1f} ms median latency (batch 1, Keras on this machine)")
    print(f"LiteRT export agrees with Keras on {report['export']['class_agreement']:.2%} of pixels")
    print(f"done in {report['seconds'] / 60:.1f} min; everything is in {out}:")
    for name in OUTPUTS:
        if os.path.exists(os.path.join(out, name)):
            print(f"  {os.path.join(out, name)}")
