"""Inspect a dataset before training: items, annotated items, image sizes, class frequencies, likely mistakes.

DATA is anything train accepts: a CVAT export (folder or .zip), an rgb/ + gt/ folder or zip,
or a built TFDS dataset name (with --data_dir). Prints a table (per class: share of the
labelled pixels, images holding it, per split, and a suggested median-frequency weight),
then warnings for what is likely a mistake: more than half the images unannotated, a
declared class absent from the training split, a validation split without foreground,
masks all one class, image and mask sizes that differ, duplicate images. Writes into
--output: report.json, class_frequency.png and contact_sheet.png (overlays of a few items).
Train with the suggested weights: segzoo train ... --class_weights auto

Example:

    segzoo inspect export.zip --output runs/inspect
"""


def add_arguments(parser):
    parser.add_argument("data", metavar="DATA", nargs="?",
                        help="CVAT export (folder or zip), rgb/ + gt/ folder or zip, or TFDS dataset name")
    parser.add_argument("--data", dest="data_option", metavar="DATA", help="DATA as a flag, as train and eval take it")
    parser.add_argument("--images", help="CVAT export saved without images: the folder of the original images")
    parser.add_argument("--binary", action="store_true",
                        help="CVAT export: merge every foreground class into one, as train --binary does")
    parser.add_argument("--data_dir", help="TFDS data directory, for a TFDS dataset name")
    parser.add_argument("--val_ratio", type=float, default=0.1,
                        help="validation fraction when the data has no split lists; use the training value "
                             "(default: 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="split seed; use the training value (default: 0)")
    parser.add_argument("--output", default="inspect",
                        help="folder for report.json, class_frequency.png and contact_sheet.png (default: inspect)")
    parser.add_argument("--samples", type=int, default=8, help="items on the contact sheet (default: 8)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --output folder")


def run(args):
    from segzoo.data import inspection
    from segzoo.errors import ConfigError
    from segzoo.files import check_output_folder

    if (args.data is None) == (args.data_option is None):
        raise ConfigError("Give the dataset once: segzoo inspect DATA, or segzoo inspect --data DATA"
                          + ("" if args.data is None else f" (got both: {args.data} and {args.data_option})") + ".")
    args.data = args.data or args.data_option
    check_output_folder(args.output, overwrite=args.overwrite)  # before the long read
    report = inspection.inspect(args.data, images=args.images, binary=args.binary, data_dir=args.data_dir,
                                val_ratio=args.val_ratio, seed=args.seed, samples=args.samples)
    written = inspection.write_report(report, args.output, overwrite=True)
    print(inspection.format_report(report))
    print(f"\nreport in {written[inspection.REPORT_FILE]}; chart: {written[inspection.CHART_FILE]}")
