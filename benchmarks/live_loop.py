"""End-to-end frame time of the live loop: decode, preprocess, model, postprocess, overlay, encode.

Runs ``segzoo predict-video``'s loop (:func:`segzoo.inference.predict_video`) on a
video resized to --size (the quickstart's sample video is 320x240; the default
640x480 is what a webcam gives), once per runtime, and prints the milliseconds
each stage takes per frame and the frames per second of the whole loop. The
model runs at the frame's size, so postprocess is the softmax-free part: argmax
and, when smoothing, the moving average.

--argmax says where the argmax is taken: "input", on logits the model's graph
resized to the frame (the default of the live predictor), and/or "stride", at the
model's output stride, with the class map upsampled (`--argmax_at_stride`). With
both, the run also reports how many pixels the two agree on over the video.

Example:

    python benchmarks/live_loop.py --checkpoint segzoo_quickstart/checkpoints/best.keras \\
        --video segzoo_quickstart/data/sample/video.mp4 --runtimes keras litert onnx auto
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import cv2
import numpy as np

from segzoo.cli.arguments import add_calibration_arguments, add_checkpoint_argument


def resized_video(source, target, size):
    """Write ``source`` resized to ``size`` ``(H, W)`` at ``target`` (MJPG .avi); returns its frame count."""
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise SystemExit(f"{source}: OpenCV cannot open this video.")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    writer = cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*"MJPG"), fps, (size[1], size[0]))
    frames = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        writer.write(cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_LINEAR))
        frames += 1
    capture.release()
    writer.release()
    return frames


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint_argument(parser)
    parser.add_argument("--video", required=True, help="the video to run on")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"),
                        help="frame height and width (default: 480 640)")
    parser.add_argument("--runtimes", nargs="+", default=["keras", "litert", "onnx", "auto"],
                        help="FramePredictor runtimes (default: keras litert onnx auto); litert-int8 and onnx-int8 "
                             "with --calibration_data")
    add_calibration_arguments(parser, "the int8 runtimes (and auto among them)")
    parser.add_argument("--smoothing", type=float, default=0.0, help="temporal smoothing (default: 0)")
    parser.add_argument("--argmax", nargs="+", choices=("input", "stride"), default=["input", "stride"],
                        help="where the argmax is taken: on logits resized to the frame, and/or at the model's "
                             "output stride with the class map upsampled (default: both)")
    parser.add_argument("--output", help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    from segzoo.cli.quiet import silence_third_party

    silence_third_party()
    from segzoo import evaluation, inference

    machine = evaluation.machine_description()
    model = inference.load_model(args.checkpoint)
    names, colors = inference.model_classes(model)
    calibration = inference.calibration_from_args(args)
    print(f"{time.strftime('%Y-%m-%d')}: {machine['cpu']} ({evaluation.describe_vector_extensions(machine)}), "
          f"{machine['cores']} cores; {os.path.basename(args.video)} at {args.size[1]}x{args.size[0]}\n")
    stages = [stage for stage in inference.STAGES if stage != "display"]  # a video file shows no window
    print("| runtime | " + " | ".join(stages) + " | total (ms) | loop FPS |\n|---" + "|---" * (len(stages) + 2) + "|")
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        video = os.path.join(workdir, "video.avi")
        frames = resized_video(args.video, video, args.size)
        for name, argmax in ((n, a) for a in args.argmax for n in args.runtimes):
            predictor = inference.FramePredictor(model, smoothing=args.smoothing, runtime=name,
                                                 argmax_at_stride=argmax == "stride", calibration_images=calibration)
            predictor.predict(_first_frame(video))  # build (and export, or choose) before the timed loop
            result = inference.predict_video(predictor, video, os.path.join(workdir, f"out_{name}_{argmax}.avi"),
                                             colors, names, progress=False)
            times = result["times_ms"]
            label = (name if name != "auto" else f"auto ({predictor.chosen_runtime})") + (
                ", argmax at stride" if argmax == "stride" else "")
            rows.append({"runtime": label, "argmax": argmax, "frames": frames, "times_ms": times,
                         "loop_fps": result["loop_fps"]})
            print(f"| {label} | " + " | ".join(f"{times.get(stage, 0.0):.1f}" for stage in stages)
                  + f" | {times['total']:.1f} | {result['loop_fps']:.1f} |", flush=True)
        agreement = None
        if set(args.argmax) == {"input", "stride"}:
            agreement = class_agreement(model, video, args.smoothing)
            print(f"\nArgmax at stride against argmax at the frame's size (keras runtime): {agreement:.2%} of the "
                  f"pixels of {frames} frames have the same class.")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump({"machine": machine, "size": list(args.size), "rows": rows, "class_agreement": agreement},
                      f, indent=2)


def class_agreement(model, video, smoothing=0.0):
    """Share of the pixels of every frame of ``video`` whose class is the same with the argmax taken at the
    model's output stride (class map upsampled) as with the argmax of the logits resized to the frame."""
    from segzoo import inference

    exact = inference.FramePredictor(model, smoothing=smoothing)
    at_stride = inference.FramePredictor(model, smoothing=smoothing, argmax_at_stride=True)
    same = total = 0
    capture = cv2.VideoCapture(video)
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        same += int(np.count_nonzero(exact.predict_classes(frame) == at_stride.predict_classes(frame)))
        total += frame.shape[0] * frame.shape[1]
    capture.release()
    return same / max(total, 1)


def _first_frame(video):
    capture = cv2.VideoCapture(video)
    ok, bgr = capture.read()
    capture.release()
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


if __name__ == "__main__":
    main()
