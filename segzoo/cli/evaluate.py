"""Evaluate a checkpoint: mean IoU and per-class IoU over a split, parameters, GFLOPs, latency.

Prints a table and writes into --output: metrics.json, report.html (one page with
every figure and picture), per_class_iou.png, confusion_matrix.png and predictions.png
(a grid of image | truth | prediction | confidence); --visualize also writes one
full-resolution PNG per image to <output>/visualizations/.

Example:

    segzoo eval --checkpoint runs/holes/best.keras --data export.zip --visualize
"""

import os


def add_arguments(parser):
    parser.add_argument("--checkpoint", required=True, help="a .keras checkpoint")
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


def run(args):
    from segzoo import data, evaluation, inference, postprocess, report as reports
    from segzoo.files import check_output, check_writable

    check_output(args.output, inputs=(args.checkpoint, args.data, args.images), overwrite=args.overwrite)
    check_writable(args.output)  # before the evaluation, not after it
    model = inference.load_model(args.checkpoint)
    source = data.prepare_source(args.data, images=args.images, import_dir=os.path.join(args.output, "dataset"))
    label_values = tuple(args.label_values) if args.label_values else None
    info = data.load_info(source, data_dir=args.data_dir, val_ratio=args.val_ratio, seed=args.seed,
                          label_values=label_values)
    data.scan_labels(source, val_ratio=args.val_ratio, seed=args.seed, label_values=label_values)
    dataset = data.load(source, args.split, batch_size=args.batch_size, image_size=args.image_size,
                        num_classes=info.num_classes, data_dir=args.data_dir, val_ratio=args.val_ratio,
                        seed=args.seed, shuffle=False, label_values=label_values)
    class_names = model.class_names or postprocess.output_class_names(model.num_classes, info.class_names)
    report = evaluation.evaluation_report(model, dataset, class_names, (*args.latency_size, 3),
                                          latency_runs=args.latency_runs)
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
