"""Segment every frame of a video and write the overlay video (same frame rate and size).

Example:

    segzoo predict-video --checkpoint runs/holes/best.keras --video in.mp4 \\
        --output out.mp4 --smoothing 0.5 --keep_largest 2
"""

from segzoo.cli.arguments import add_checkpoint_argument, add_predictor_arguments


def add_arguments(parser):
    add_checkpoint_argument(parser)
    parser.add_argument("--video", required=True, help="input video file")
    parser.add_argument("--output", required=True,
                        help="output video: .webm (VP8, plays in browsers and players), .mp4 (H.264 where "
                             "OpenCV has it, else MPEG-4 Part 2) or .avi (MJPEG)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --output if it exists (an output that is one of the inputs is always refused)")
    add_predictor_arguments(parser)


def run(args):
    from segzoo import inference
    from segzoo.files import check_output_file

    check_output_file(args.output, inputs=(args.video, args.checkpoint), overwrite=args.overwrite)
    predictor, colors, names = inference.predictor_from_args(args)
    result = inference.predict_video(predictor, args.video, args.output, colors, names,
                                     show_fps=not args.no_fps)
    print(f"{result['frames']} frames at {result['fps']:.2f} FPS written to {result['output']}")
