"""Segment a webcam stream live: a window with the overlay, legend and FPS (q or Esc quits).

Without a display (a server, a container), or with --no_show, the overlay is
written to --output instead (default camera_<time>.webm).

Example:

    segzoo camera --checkpoint runs/holes/best.keras --camera 0
"""

from segzoo.cli.arguments import add_boolean_argument, add_checkpoint_argument, add_predictor_arguments


def add_arguments(parser):
    add_checkpoint_argument(parser)
    parser.add_argument("--camera", default="0",
                        help="webcam index (0 is the first) or a stream URL / video file (default: 0)")
    parser.add_argument("--output", help="also write the overlay to this video file")
    add_boolean_argument(parser, "--show", default=None,
                         help="show a window (default: when a display is available)")
    parser.add_argument("--max_frames", type=int, help="stop after this many frames")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --output if it exists (an output that is one of the inputs is always refused)")
    add_predictor_arguments(parser)


def run(args):
    from segzoo import inference

    from segzoo.files import check_output_file

    camera = int(args.camera) if args.camera.isdigit() else args.camera
    if args.output:
        check_output_file(args.output, inputs=(args.checkpoint, None if isinstance(camera, int) else camera),
                          overwrite=args.overwrite)
    predictor, colors, names = inference.predictor_from_args(args)
    result = inference.run_camera(predictor, colors, names, camera=camera, output=args.output,
                                  show=args.show, max_frames=args.max_frames)
    print(f"{result['frames']} frames" + (f", written to {result['output']}" if result["output"] else ""))
