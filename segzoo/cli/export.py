"""Export a checkpoint to SavedModel, LiteRT or ONNX, then check the file against the Keras model.

The exported graph takes float32 RGB 0..255 images (NHWC, batch 1 for LiteRT)
and normalises inside itself. After writing, the file runs on real images with
its own runtime and the export fails loudly if it disagrees with the model.
int8 (LiteRT, or ONNX Runtime static quantisation) calibrates on --calibration_images images
drawn from --data.

Examples:

    segzoo export --checkpoint runs/holes/best.keras --format litert \\
        --quantize int8 --data export.zip --output holes_int8.tflite
    segzoo export --checkpoint runs/holes/best.keras --format onnx --output holes.onnx
    segzoo export --checkpoint runs/holes/best.keras --format onnx --quantize int8 \\
        --data export.zip --output holes_int8.onnx
    segzoo export --checkpoint runs/holes/best.keras --format onnx --no_upsample \\
        --output holes_stride8.onnx          # logits at 1/8 of 480x640: (1, 60, 80, classes)

TensorRT: from the ONNX file (any input size), for one size:

    trtexec --onnx=holes.onnx --shapes=images:1x480x640x3 --saveEngine=holes.plan --fp16
"""

import os

from segzoo.cli.arguments import add_checkpoint_argument
from segzoo.configs import FORMATS, OUTPUTS, QUANTIZATIONS
from segzoo.errors import ConfigError


def add_arguments(parser):
    add_checkpoint_argument(parser)
    parser.add_argument("--format", required=True, choices=FORMATS, help="export format")
    parser.add_argument("--quantize", default="none", choices=QUANTIZATIONS,
                        help="quantisation: LiteRT float16 or int8, ONNX int8 (static, calibrated on --data) "
                             "(default: none)")
    parser.add_argument("--output", required=True, help="output file (.tflite, .onnx) or SavedModel folder")
    parser.add_argument("--input_size", type=int, nargs=2, metavar=("H", "W"), default=(480, 640),
                        help="height and width of the exported graph (default: 480 640)")
    parser.add_argument("--output_kind", default="logits", choices=OUTPUTS,
                        help="what the graph returns; 'classes' puts the argmax inside (default: logits)")
    parser.add_argument("--no_upsample", action="store_true",
                        help="end the graph at the model's output stride (1/8 of --input_size for DDRNet), as "
                             "the official DDRNet models do, without the resize to the input size: the caller "
                             "upsamples (e.g. the class map after the argmax)")
    parser.add_argument("--data", help="rgb/ + gt/ folder or zip, or CVAT export: images for int8 calibration and checks")
    parser.add_argument("--images", help="CVAT export saved without images: the original images")
    parser.add_argument("--calibration_images", type=int, default=64,
                        help="images drawn from --data for int8 calibration (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image draw (default: 0)")
    parser.add_argument("--report", help="also write the check's report as JSON here")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --output (and --report) if they exist (an output that is one of the inputs "
                             "is always refused)")


def run(args):
    from segzoo import data, export, inference
    from segzoo.files import check_output, check_output_file, check_writable, write_json

    if args.quantize == "int8" and not args.data:
        raise ConfigError("--quantize int8 needs --data, the training images to calibrate on.")
    inputs = (args.checkpoint, args.data, args.images)
    check_output(args.output, inputs=inputs, overwrite=args.overwrite)
    check_writable(os.path.dirname(os.path.abspath(args.output)))
    if args.report:
        check_output_file(args.report, inputs=(*inputs, args.output), overwrite=args.overwrite, name="report")
    model = inference.load_model(args.checkpoint)
    images = None
    if args.data:
        with data.open_dataset(args.data, images=args.images) as dataset:
            images = data.sample_images(dataset, args.calibration_images, args.input_size, seed=args.seed,
                                        subset="train")
    report = export.export_model(model, args.output, args.format, args.quantize, args.input_size,
                                 args.output_kind, representative_images=images, overwrite=args.overwrite,
                                 upsample=not args.no_upsample)  # logs its check: report.summary()
    if args.report:
        write_json(args.report, report.__dict__)
