"""Predict every image of a folder (recursively): class ids, colour masks, overlays, CVAT pre-annotations.

Writes into --output, under each image's path relative to --images: classes/<id>.png (class
ids), colors/<id>.png (the label map's colours), overlays/<id>.png, and with --confidence
confidence/<id>.png (probability of the winning class, 16-bit). --format cvat also writes
cvat_preannotations.zip, a "Segmentation mask 1.1" zip whose ids are the images' relative
paths without extension: in CVAT, open the task that holds these images, Actions > Upload
annotations, format "Segmentation mask 1.1", and correct the masks instead of drawing them.

Images are resized to the model size (--input_size, default: their size rounded to the
model's divisor) and the result resized back, or predicted at full resolution in
overlapping windows with --tile H W.

Examples:

    segzoo predict --checkpoint runs/holes/best.keras --images new_batch/ --output predictions
    segzoo predict --checkpoint runs/holes/best.keras --images new_batch/ --output pre \\
        --format png cvat --tile 512 512 --runtime onnx
"""

from segzoo.cli.arguments import add_calibration_arguments, add_checkpoint_argument
from segzoo.configs import PREDICTOR_RUNTIMES


def add_model_arguments(parser):
    """The flags predict and rank share: the checkpoint, the images and how the model runs on them."""
    add_checkpoint_argument(parser)
    parser.add_argument("--images", required=True,
                        help="folder of images, searched recursively (png, jpg, ... in any case)")
    parser.add_argument("--input_size", type=int, nargs=2, metavar=("H", "W"),
                        help="resize images to this size for the model and the result back (default: the image "
                             "size rounded to the model's size divisor)")
    parser.add_argument("--tile", type=int, nargs=2, metavar=("H", "W"),
                        help="instead of resizing, predict at full resolution in overlapping windows of this size")
    parser.add_argument("--overlap", type=float, default=0.25,
                        help="with --tile: fraction of a window shared with its neighbour (default: 0.25)")
    parser.add_argument("--batch_size", type=int, default=4, help="images (or windows) per model call (default: 4)")
    parser.add_argument("--keep_largest", type=int, default=0,
                        help="keep only the N largest regions of each class, 0 keeps all (default: 0)")
    parser.add_argument("--runtime", choices=PREDICTOR_RUNTIMES, default="keras",
                        help="run the Keras graph, or export the model per input size and run it on LiteRT or "
                             "ONNX Runtime (int8: calibrated on --calibration_data), or auto: the fastest here "
                             "(default: keras)")
    add_calibration_arguments(parser, "--runtime litert-int8 or onnx-int8 (and auto)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --output folder")


def predictor_from_args(args):
    """``(FramePredictor, class_names, colors)`` from the flags of :func:`add_model_arguments`."""
    from segzoo import inference
    from segzoo.runtime import check_calibration

    check_calibration(args.runtime, args.calibration_data)  # before loading anything
    calibration = inference.calibration_from_args(args)
    model = inference.load_model(args.checkpoint)
    names, colors = inference.model_classes(model)
    return inference.FramePredictor(model, args.input_size, keep_largest=args.keep_largest, runtime=args.runtime,
                                    calibration_images=calibration), names, colors


def add_arguments(parser):
    from segzoo.prediction import FORMATS

    add_model_arguments(parser)
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=["png"],
                        help="png: class ids, colour masks and overlays; cvat: a Segmentation mask 1.1 zip for "
                             "CVAT (default: png)")
    parser.add_argument("--confidence", action="store_true",
                        help="also write the probability of the winning class as a 16-bit PNG")


def run(args):
    from segzoo import prediction

    predictor, names, colors = predictor_from_args(args)
    result = prediction.predict_folder(predictor, args.images, args.output, names, colors, formats=args.format,
                                       confidence=args.confidence, tile=args.tile, overlap=args.overlap,
                                       batch_size=args.batch_size, overwrite=args.overwrite)
    shares = ", ".join(f"{name} {100 * share:.1f}%" for name, share in result["class_pixels"].items())
    print(f"{result['images']} images predicted into {result['output']} ({shares})")
    if result["cvat_zip"]:
        print(f"CVAT pre-annotations: {result['cvat_zip']} (Upload annotations, format \"Segmentation mask 1.1\")")
