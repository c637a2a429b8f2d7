"""Evaluate a checkpoint: mean IoU and per-class IoU over a split, parameters, GFLOPs, latency.

Prints a table and writes into --output: metrics.json, report.html (one page with
every figure and picture), per_class_iou.png, confusion_matrix.png and predictions.png
(a grid of image | truth | prediction | confidence); --visualize also writes one
full-resolution PNG per image to <output>/visualizations/.

Test-time augmentation (--flip, --scales, --window): the probabilities averaged over
mirrored and rescaled passes, each in overlapping windows with --window. The scores
with it are printed and written (metrics.json "tta", report.html) beside the
single-pass ones. Each image costs one forward pass per scale, twice that with --flip,
times its windows with --window (the report says how many); the latency stays that of
one pass.

Examples:

    segzoo eval --checkpoint runs/holes/best.keras --data export.zip --visualize
    segzoo eval --checkpoint runs/holes/best.keras --data export.zip --flip --scales 0.75 1.0 1.25 1.5 1.75
"""

import os

from segzoo.cli.arguments import add_calibration_arguments, add_checkpoint_argument
from segzoo.configs import PREDICTOR_RUNTIMES


def add_arguments(parser):
    add_checkpoint_argument(parser)
    parser.add_argument("--data", required=True,
                        help="rgb/ + gt/ folder or zip, CVAT export (folder or zip) or TFDS dataset name")
    parser.add_argument("--images", help="CVAT export saved without images: the original images")
    parser.add_argument("--data_dir", help="TFDS data directory, for a TFDS dataset name")
    parser.add_argument("--split", default="validation",
                        help="split to evaluate: train, validation, test (a test list) or all (default: validation)")
    parser.add_argument("--val_ratio", type=float, default=0.1,
                        help="validation fraction when the data has no split lists; use the training value")
    parser.add_argument("--seed", type=int, default=0, help="split seed; use the training value (default: 0)")
    parser.add_argument("--image_size", type=int, nargs=2, metavar=("H", "W"),
                        help="resize images to this size (default: their own size)")
    parser.add_argument("--batch_size", type=int, default=1, help="images per batch (default: 1)")
    parser.add_argument("--latency_size", type=int, nargs=2, metavar=("H", "W"), default=(480, 640),
                        help="input size for GFLOPs and latency (default: 480 640)")
    parser.add_argument("--latency_runs", type=int, default=50, help="timed runs (default: 50)")
    parser.add_argument("--runtime", default="keras", choices=PREDICTOR_RUNTIMES,
                        help="what scores and times the model: the Keras graph, an exported runtime (exported and "
                             "checked once per image size; int8: calibrated on --calibration_data), or auto: the "
                             "fastest here (default: keras)")
    add_calibration_arguments(parser, "--runtime litert-int8 or onnx-int8 (and auto)")
    parser.add_argument("--output", default="eval", help="folder for metrics.json, report.html and pictures "
                                                          "(default: eval)")
    parser.add_argument("--grid_images", type=int, default=6, help="images in predictions.png (default: 6)")
    parser.add_argument("--visualize", action="store_true", help="also write a full-resolution PNG per image")
    parser.add_argument("--max_visualizations", type=int, default=32, help="PNGs to write (default: 32)")
    parser.add_argument("--label_values", type=int, nargs="+",
                        help="rgb/ + gt/ data: the stored label value of each class in order, e.g. 0 255 for "
                             "binary masks stored as 0/255")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --output folder that is not empty, replacing its files (an output "
                             "that is one of the inputs is always refused)")
    tta = parser.add_argument_group("test-time augmentation (scores beside the single-pass ones)")
    tta.add_argument("--flip", action="store_true", help="also average each image's left-right mirror")
    tta.add_argument("--scales", type=float, nargs="+", metavar="S",
                     help="average passes at these image size factors, e.g. 0.75 1.0 1.25 1.5 1.75")
    tta.add_argument("--window", type=int, nargs=2, metavar=("H", "W"),
                     help="run each pass over a larger image in overlapping windows of this size (multiples of "
                          "the model's size divisor)")
    tta.add_argument("--overlap", type=float,
                     help="with --window: the fraction of a window shared with its neighbour (default: 0.33)")


def tta_from_args(args):
    """The :class:`segzoo.tta.TestTimeAugmentation` the flags ask for, or None when they ask for none."""
    from segzoo.errors import ConfigError, option
    from segzoo.tta import TestTimeAugmentation

    if args.overlap is not None and args.window is None:
        raise ConfigError(f"{option('overlap')} {args.overlap} is the overlap of windows: add "
                          f"{option('window')} H W, or leave it out.")
    if not (args.flip or args.scales or args.window):
        return None
    overlap = {} if args.overlap is None else {"overlap": args.overlap}
    return TestTimeAugmentation(flip=args.flip, scales=args.scales or (1.0,), window=args.window, **overlap)


def run(args):
    from segzoo import data, evaluation, inference, postprocess, report as reports
    from segzoo.files import check_output, check_writable
    from segzoo.runtime import check_calibration

    tta = tta_from_args(args)
    check_calibration(args.runtime, args.calibration_data)
    check_output(args.output, inputs=(args.checkpoint, args.data, args.images), overwrite=args.overwrite)
    check_writable(args.output)  # before the evaluation, not after it
    calibration = inference.calibration_from_args(args)
    model = inference.load_model(args.checkpoint)
    prepared = data.prepare_source(args.data, images=args.images, import_dir=os.path.join(args.output, "dataset"))
    with data.open_source(prepared, data_dir=args.data_dir, val_ratio=args.val_ratio, seed=args.seed,
                          label_values=args.label_values) as source:
        data.scan_labels(source)
        print(f"scoring {data.split_description(source, args.split)}")
        dataset = data.load(source, args.split, batch_size=args.batch_size, image_size=args.image_size,
                            seed=args.seed, shuffle=False)
        class_names = model.class_names or postprocess.output_class_names(model.num_classes, source.info.class_names)
        report = evaluation.evaluation_report(model, dataset, class_names, (*args.latency_size, 3),
                                              latency_runs=args.latency_runs, tta=tta, runtime=args.runtime,
                                              calibration_images=calibration)
        report.update(checkpoint=os.path.abspath(args.checkpoint), data=args.data, split=args.split)
        colors = model.class_colors or data.voc_palette(len(class_names)).tolist()
        rows = evaluation.prediction_rows(model, dataset, colors, max_images=args.grid_images)
        written = reports.save_evaluation(args.output, report, f"segzoo eval: {os.path.basename(args.checkpoint)} "
                                          f"on {args.data} ({args.split})", rows, colors)
        print(evaluation.format_report(report))
        if args.visualize:
            paths = evaluation.save_visualizations(model, dataset, colors, os.path.join(args.output, "visualizations"),
                                                   max_images=args.max_visualizations)
            print(f"{len(paths)} pictures in {os.path.join(args.output, 'visualizations')}")
    print(f"metrics in {written['metrics.json']}; every figure on one page: {written['report.html']}")
