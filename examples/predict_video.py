"""Segment every frame of a video and write the overlay video (same frame rate and size).

Example:

    python examples/predict_video.py --checkpoint runs/holes/best.keras --video in.mp4 \\
        --output out.mp4 --smoothing 0.5 --keep_largest 2
"""

import argparse

from segzoo import inference
from segzoo.cli import setup_logging


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a .keras checkpoint")
    parser.add_argument("--video", required=True, help="input video file")
    parser.add_argument("--output", required=True,
                        help="output video: .webm (VP8, plays in browsers and players), .mp4 (H.264 where "
                             "OpenCV has it, else MPEG-4 Part 2) or .avi (MJPEG)")
    inference.add_predictor_arguments(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    setup_logging()
    predictor, colors, names = inference.predictor_from_args(args)
    result = inference.predict_video(predictor, args.video, args.output, colors, names,
                                     show_fps=not args.no_fps)
    print(f"{result['frames']} frames at {result['fps']:.2f} FPS written to {result['output']}")


if __name__ == "__main__":
    main()
