"""Live prediction: frames in, class maps and overlays out, for a video file or a webcam.

:class:`FramePredictor` runs the model on one RGB frame at a time, with
optional temporal smoothing of the class probabilities (an exponential moving
average, which stops flicker between frames) and optional keep-largest-regions
post-processing. :func:`draw_overlay` paints the classes in the label map's
colours with a legend and an FPS counter. :func:`predict_video` and
:func:`run_camera` are the loops. The model's own preprocessing is the only
one: frames go in as RGB 0..255, exactly like training images.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

import cv2
import keras
import numpy as np
from tqdm.auto import tqdm

from segzoo import postprocess, runtime as runtimes
from segzoo.configs import PREDICTOR_RUNTIMES
from segzoo.constants import BACKGROUND_ID
from segzoo.data.overlay import overlay_label, voc_palette
from segzoo.errors import ConfigError, option
from segzoo.files import atomic_write, check_output
from segzoo.native_output import captured_stderr
from segzoo.models import load_model

logger = logging.getLogger(__name__)

#: Codecs tried per output extension, most widely playable first. pip's OpenCV
#: has no H.264 encoder, so ``.mp4`` falls back to MPEG-4 Part 2 (desktop players,
#: not browsers); ``.webm`` (VP8) plays in browsers and desktop players alike.
VIDEO_CODECS = {".mp4": ("avc1", "H264", "mp4v"), ".webm": ("VP80",), ".avi": ("MJPG",)}


def keep_largest_regions(classes, count=1):
    """Keep only the ``count`` largest connected regions of each non-background class.

    Args:
        classes: ``uint8`` class ids ``(H, W)``.
        count: regions kept per class.

    Returns:
        A copy of ``classes`` where smaller regions became background.
    """
    result = classes.copy()
    for class_id in np.unique(classes):
        if class_id == BACKGROUND_ID:
            continue
        mask = (classes == class_id).astype(np.uint8)
        num, components, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if num - 1 <= count:
            continue
        order = np.argsort(stats[1:, cv2.CC_STAT_AREA])[::-1] + 1  # component ids, largest first
        drop = np.isin(components, order[count:])
        result[drop] = BACKGROUND_ID
    return result


#: What :class:`FramePredictor` can run the model on (see :mod:`segzoo.runtime`): ``auto``, or any
#: runtime (the int8 ones with calibration images).
RUNTIMES = PREDICTOR_RUNTIMES


#: The stages of one frame of the live loop, in order (see :class:`FrameTimes`).
STAGES = ("decode", "preprocess", "model", "postprocess", "overlay", "display", "encode")


class FrameTimes:
    """Seconds spent per stage of the live loop (:data:`STAGES`), added up over frames.

    ``decode``: reading the frame and its colour conversion; ``preprocess``:
    resizing to the model's size; ``model``: the forward pass and the softmax;
    ``postprocess``: smoothing, resizing back to the frame, argmax, region
    filtering; ``overlay``: drawing; ``display``: showing the window (the camera);
    ``encode``: colour conversion and writing.
    """

    def __init__(self):
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.frames = 0
        #: Seconds of one-off work outside the stages: a runtime built for a new frame size (export, check,
        #: the ``"auto"`` race).
        self.setup_seconds = 0.0

    @contextlib.contextmanager
    def stage(self, name):
        """Add the time the block takes to stage ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def per_frame_ms(self) -> dict:
        """Milliseconds per frame of each stage that was timed, and their ``total``."""
        frames = max(self.frames, 1)
        times = {name: 1000.0 * value / frames for name, value in self.seconds.items() if value}
        return {**times, "total": sum(times.values())}

    def summary(self) -> str:
        """One line: each stage's milliseconds per frame and the frames per second they add up to."""
        times = self.per_frame_ms()
        stages = ", ".join(f"{name} {times[name]:.1f}" for name in STAGES if name in times)
        setup = f"; setup {self.setup_seconds:.1f} s once, not counted" if self.setup_seconds else ""
        return (f"per frame (ms): {stages}; {times['total']:.1f} ms = {1000.0 / max(times['total'], 1e-9):.1f} FPS"
                + setup)


class FramePredictor:
    """Runs a segmentation model on single RGB frames.

    Args:
        model: a segmentation model (logits out).
        input_size: ``(H, W)`` the frame is resized to for the model; default:
            the frame size rounded to the nearest multiple of the model's
            ``size_divisor`` (or the model's fixed input size).
        smoothing: weight of the past in the moving average of probabilities,
            0 (off) to <1 (smoother, slower to react).
        keep_largest: if > 0, keep only this many largest regions per class.
        runtime: ``"keras"`` (the compiled Keras graph), an exported runtime
            such as ``"litert"`` or ``"onnx"`` (on the first frame of each input
            size the model is exported to a temporary file, checked against
            Keras on that frame and run there; :mod:`segzoo.runtime`), or
            ``"auto"``: on the first frame, time the float runtimes this machine
            has (a few runs each; the int8 ones too, given ``calibration_images``)
            and keep the fastest, logging which and the timings
            (:attr:`chosen_runtime`). An int8 runtime (``"litert-int8"``,
            ``"onnx-int8"``) is calibrated on ``calibration_images``.
        argmax_at_stride: the runtime runs the model without its final resize, so
            it returns logits at the output stride (1/8 of the input for DDRNet);
            :meth:`predict_classes` smooths and takes the argmax there and
            upsamples the class map to the frame (nearest). Cheaper than
            upsampling every class's logits first, and blockier at class borders
            (``benchmarks/live_loop.py`` measures how often the classes agree).
            :meth:`predict` still upsamples the probabilities (bilinear).
        calibration_images: RGB training images (a sequence of ``(h, w, 3)`` arrays of any sizes,
            e.g. :func:`segzoo.data.draw_images`) that int8 runtimes calibrate on, resized to the
            model's input size.

    Raises:
        segzoo.errors.ConfigError: an int8 runtime without ``calibration_images``.
    """

    def __init__(self, model, input_size=None, smoothing=0.0, keep_largest=0, runtime="keras",
                 argmax_at_stride=False, calibration_images=None):
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1); got {smoothing}.")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}; got {runtime!r}.")  # before any work
        self.model = model
        self.input_size = tuple(input_size) if input_size else None
        self.smoothing = float(smoothing)
        self.keep_largest = int(keep_largest)
        self.runtime = runtime
        self.argmax_at_stride = bool(argmax_at_stride)
        self._forward = runtimes.ForwardPerSize(model, runtime, what="frames", upsample=not argmax_at_stride,
                                                calibration_images=calibration_images)
        self._average = None
        #: Where the time of :meth:`predict` goes, frame after frame (:class:`FrameTimes`).
        self.times = FrameTimes()

    @property
    def chosen_runtime(self):
        """The runtime frames run on: :attr:`runtime`, or what ``"auto"`` chose (None before the first frame)."""
        return self._forward.chosen_runtime

    def reset(self):
        """Forget the smoothing history (at a cut or a new stream)."""
        self._average = None

    def model_size(self, frame_shape):
        """The ``(H, W)`` the model runs at for a frame of ``frame_shape`` (see ``input_size``)."""
        if self.input_size:
            return self.input_size
        fixed = self.model.backbone.input_shape[1:3]
        if all(fixed):
            return tuple(fixed)
        divisor = self.model.size_divisor
        return tuple(max(divisor, int(round(s / divisor)) * divisor) for s in frame_shape[:2])

    def probabilities(self, images):
        """Class probabilities ``float32 (B, H, W, K)`` (numpy) of float32 RGB 0..255 ``images (B, H, W, 3)``.

        ``H`` and ``W`` must suit the model (multiples of its size divisor); no
        resizing and no smoothing. Runs on :attr:`runtime`. With ``argmax_at_stride``
        they come at the model's output stride, ``(B, H / s, W / s, K)``.
        """
        return keras.ops.convert_to_numpy(postprocess.probabilities(self._forward(images)))

    def _to_frame(self, probabilities, size):
        """Probabilities resized to the frame ``size`` ``(H, W)``, and the class ids they give."""
        height, width = size
        if probabilities.shape[:2] != (height, width):
            probabilities = cv2.resize(probabilities, (width, height), interpolation=cv2.INTER_LINEAR)
            if probabilities.ndim == 2:  # cv2 drops a trailing axis of size 1
                probabilities = probabilities[..., None]
        classes = probabilities.argmax(axis=-1).astype(np.uint8)
        if self.keep_largest:
            classes = keep_largest_regions(classes, self.keep_largest)
        return classes, probabilities

    def _resized(self, frame):
        model_height, model_width = self.model_size(frame.shape)
        if frame.shape[:2] == (model_height, model_width):
            return frame.astype(np.float32)
        return cv2.resize(frame, (model_width, model_height), interpolation=cv2.INTER_LINEAR).astype(np.float32)

    def predict(self, frame):
        """Class ids ``uint8 (H, W)`` and probabilities ``float32 (H, W, K)`` for one RGB ``uint8`` frame.

        The time of each step is added to :attr:`times`.
        """
        with self.times.stage("preprocess"):
            resized = self._resized(frame)[None]
        self._prepare(resized)
        with self.times.stage("model"):
            probabilities = self.probabilities(resized)[0]
        with self.times.stage("postprocess"):
            result = self._to_frame(self._smoothed(probabilities), frame.shape[:2])
        self.times.frames += 1
        return result

    def predict_classes(self, frame):
        """Class ids ``uint8 (H, W)`` of one RGB ``uint8`` frame: :meth:`predict` without the probabilities.

        When nothing needs them (no smoothing, the model running at the frame's
        size) the softmax is skipped: the argmax of the logits is the argmax of
        the probabilities, so the classes are the same, a few milliseconds sooner
        at 640x480 (``benchmarks/live_loop.py``). With ``argmax_at_stride`` the
        argmax (and the smoothing) happen at the model's output stride and the
        class map is upsampled to the frame.
        """
        if self.argmax_at_stride:
            return self._predict_classes_at_stride(frame)
        if self.smoothing or tuple(self.model_size(frame.shape)) != frame.shape[:2]:
            return self.predict(frame)[0]
        with self.times.stage("preprocess"):
            image = frame.astype(np.float32)[None]
        self._prepare(image)
        with self.times.stage("model"):
            logits = keras.ops.convert_to_numpy(self._forward(image))
        with self.times.stage("postprocess"):
            classes = postprocess.class_ids(logits)[0]
            if self.keep_largest:
                classes = keep_largest_regions(classes, self.keep_largest)
        self.times.frames += 1
        return classes

    def _prepare(self, images):
        """Build the runtime for this input size, if new, timed as :attr:`FrameTimes.setup_seconds`, not as "model"."""
        start = time.perf_counter()
        if self._forward.prepare(images):
            self.times.setup_seconds += time.perf_counter() - start

    def _smoothed(self, probabilities):
        """``probabilities`` blended into the moving average of the previous frames' (when smoothing and the
        size is the same), which they then become."""
        if self.smoothing and self._average is not None and self._average.shape == probabilities.shape:
            probabilities = self.smoothing * self._average + (1.0 - self.smoothing) * probabilities
        self._average = probabilities
        return probabilities

    def _predict_classes_at_stride(self, frame):
        with self.times.stage("preprocess"):
            resized = self._resized(frame)[None]
        self._prepare(resized)
        with self.times.stage("model"):
            logits = keras.ops.convert_to_numpy(self._forward(resized))
        with self.times.stage("postprocess"):
            if self.smoothing:
                probabilities = self._smoothed(keras.ops.convert_to_numpy(postprocess.probabilities(logits))[0])
                classes = probabilities.argmax(axis=-1).astype(np.uint8)
            else:
                classes = postprocess.class_ids(logits)[0]
            height, width = frame.shape[:2]
            classes = cv2.resize(classes, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
            if self.keep_largest:
                classes = keep_largest_regions(classes, self.keep_largest)
        self.times.frames += 1
        return classes

    def predict_batch(self, frames):
        """:meth:`predict` for several independent RGB ``uint8`` images (no smoothing), batched.

        Images that the model runs at the same size go through it in one batch.
        Returns a list of ``(class ids uint8 (H, W), probabilities float32 (H, W, K))``
        at each image's own size, in the order of ``frames``.
        """
        resized = [self._resized(frame) for frame in frames]
        results = [None] * len(frames)
        for size in dict.fromkeys(r.shape for r in resized):
            indices = [i for i, r in enumerate(resized) if r.shape == size]
            probabilities = self.probabilities(np.stack([resized[i] for i in indices]))
            for i, p in zip(indices, probabilities):
                results[i] = self._to_frame(p, frames[i].shape[:2])
        return results


def draw_overlay(frame, classes, colors, class_names, fps=None, alpha=0.5):
    """The frame with classes painted in their colours, a legend, and an FPS counter (RGB uint8)."""
    canvas = overlay_label(frame, classes, colors, alpha=alpha)
    scale = max(frame.shape[0] / 720.0, 0.4)
    thickness = max(int(round(2 * scale)), 1)
    line = int(28 * scale)
    y = line
    for name, color in zip(class_names, colors):
        cv2.rectangle(canvas, (8, y - int(18 * scale)), (8 + int(18 * scale), y), tuple(int(c) for c in color), -1)
        cv2.putText(canvas, name, (14 + int(22 * scale), y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
        y += line
    if fps is not None:
        text = f"{fps:.1f} FPS"
        (text_width, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, thickness)
        cv2.putText(canvas, text, (frame.shape[1] - text_width - 10, line), cv2.FONT_HERSHEY_SIMPLEX,
                    0.8 * scale, (255, 255, 0), thickness, cv2.LINE_AA)
    return canvas


def open_video_writer(path, fps, frame_size, name=None):
    """A ``cv2.VideoWriter`` for ``path`` (frames of ``(width, height)``), with the most widely
    playable codec of :data:`VIDEO_CODECS` for its extension that this OpenCV build can write.

    ``name``: the file that messages name, where ``path`` is a temporary file that becomes it
    (:func:`segzoo.files.atomic_write`); default ``path``.
    """
    path = os.fspath(path)
    name = path if name is None else os.fspath(name)
    extension = os.path.splitext(path)[1].lower()
    if extension not in VIDEO_CODECS:
        raise ValueError(f"{name}: choose a video file ending in {', '.join(VIDEO_CODECS)}.")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    codecs = VIDEO_CODECS[extension]
    notices = []
    for codec in codecs:
        with captured_stderr() as captured:  # FFmpeg's codec-tag notices, printed for codecs that work too
            writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), float(fps), tuple(frame_size))
            notices.append(captured().strip())
        if writer.isOpened():
            if codec == "mp4v":
                logger.info("%s: written as MPEG-4 Part 2 ('mp4v'), as this OpenCV build has no H.264 encoder; "
                            "choose a .webm name for a video that browsers play too.", name)
            return writer
        writer.release()
    said = "\n".join(notice for notice in notices if notice)
    raise RuntimeError(f"{name}: OpenCV cannot write a video with any of the codecs {codecs}."
                       + (f" OpenCV said:\n{said}" if said else ""))


class _FpsMeter:
    """Frames per second of the whole loop, smoothed."""

    def __init__(self):
        self.value, self._last = None, None

    def tick(self):
        now = time.perf_counter()
        if self._last is not None:
            current = 1.0 / max(now - self._last, 1e-6)
            self.value = current if self.value is None else 0.9 * self.value + 0.1 * current
        self._last = now
        return self.value


def predict_video(predictor, video_path, output_path, colors, class_names, show_fps=True, progress=True,
                  overwrite=True):
    """Segment every frame of ``video_path`` and write the overlays to ``output_path``.

    The output keeps the source frame rate and size; it is written to a
    temporary file beside it and moved into place when complete. An
    ``output_path`` that is ``video_path`` is refused; an existing one is
    replaced only with ``overwrite``. Returns a dict with ``frames``, ``fps``
    (source), ``output``, ``loop_fps`` (frames per second of the whole loop)
    and ``times_ms`` (milliseconds per frame of each stage, :class:`FrameTimes`).
    """
    check_output(output_path, inputs=(video_path,), overwrite=overwrite)
    with atomic_write(output_path) as temporary:
        return _predict_video(predictor, video_path, temporary, output_path, colors, class_names, show_fps,
                              progress)


def _predict_video(predictor, video_path, temporary, output_path, colors, class_names, show_fps, progress):
    capture = cv2.VideoCapture(os.fspath(video_path))
    if not capture.isOpened():
        raise FileNotFoundError(f"{video_path}: OpenCV cannot open this video.")
    source_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    if source_fps <= 0:
        logger.warning("%s does not state its frame rate; writing 30 FPS.", video_path)
        source_fps = 30.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = open_video_writer(temporary, source_fps, size, name=output_path)
    meter, frames = _FpsMeter(), 0
    predictor.reset()
    times = predictor.times = FrameTimes()
    start = time.perf_counter()
    try:
        with tqdm(total=total, desc="predicting", unit="frame", disable=not progress) as bar:
            while True:
                frame = _read_rgb(capture, times)
                if frame is None:
                    break
                classes = predictor.predict_classes(frame)
                with times.stage("overlay"):
                    canvas = draw_overlay(frame, classes, colors, class_names, meter.tick() if show_fps else None)
                with times.stage("encode"):
                    writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
                frames += 1
                bar.update(1)
    finally:
        capture.release()
        writer.release()
    if frames == 0:
        raise ValueError(f"{video_path}: no frame could be read.")
    return {"frames": frames, "fps": source_fps, "output": os.fspath(output_path),
            **_loop_figures(frames, size, time.perf_counter() - start, times)}


def _read_rgb(capture, times):
    """The next frame of ``capture`` as RGB ``(H, W, 3)`` uint8, or None at the end; timed as ``decode``."""
    with times.stage("decode"):
        ok, bgr = capture.read()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None


def _loop_figures(frames, size, seconds, times):
    """Log the live loop's frames per second and where each frame's time went; return ``loop_fps`` (the
    whole loop, setup left out) and ``times_ms`` (:meth:`FrameTimes.per_frame_ms`)."""
    loop_fps = frames / max(seconds - times.setup_seconds, 1e-9)
    logger.info("%d frames at %dx%d, %.1f FPS end to end; %s", frames, size[0], size[1], loop_fps, times.summary())
    return {"loop_fps": loop_fps, "times_ms": times.per_frame_ms()}


def has_display():
    """Whether a window can be shown: on Linux, whether a display server is set."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def run_camera(predictor, colors, class_names, camera=0, output=None, show=None, max_frames=None,
               window_name="segzoo"):
    """Segment a live stream: webcam ``camera`` (an index, or a stream URL/file).

    Shows a window when a display is available (``q`` or Esc quits); without
    one, or with ``show=False``, writes the overlays to ``output`` instead of
    failing (default ``camera_<time>.webm``); so does a window that OpenCV
    cannot open (a headless build). Returns a dict with ``frames``,
    ``output`` (None when only shown), ``loop_fps`` and ``times_ms`` (as
    :func:`predict_video`; logged at the end).
    """
    default_output = f"camera_{time.strftime('%Y%m%d_%H%M%S')}.webm"
    show = has_display() if show is None else show
    if not show and output is None:
        output = default_output
        logger.warning("No display: writing the stream to %s instead of showing it.", output)
    capture = cv2.VideoCapture(camera)
    if not capture.isOpened():
        raise ConfigError(f"Cannot open {option('camera', camera)}: check the index (0 is the first webcam), the "
                          f"stream's address or file, and that no other program holds it.")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    writer, meter, frames, size = None, _FpsMeter(), 0, None
    stack = contextlib.ExitStack()
    predictor.reset()
    times = predictor.times = FrameTimes()
    start = time.perf_counter()
    try:
        while max_frames is None or frames < max_frames:
            frame = _read_rgb(capture, times)
            if frame is None:
                break
            classes = predictor.predict_classes(frame)
            with times.stage("overlay"):
                canvas = cv2.cvtColor(draw_overlay(frame, classes, colors, class_names, meter.tick()),
                                      cv2.COLOR_RGB2BGR)
            size = (canvas.shape[1], canvas.shape[0])
            if show:
                try:
                    with times.stage("display"):
                        cv2.imshow(window_name, canvas)
                        quit_pressed = cv2.waitKey(1) & 0xFF in (ord("q"), 27)
                except cv2.error as error:
                    show, output = False, output or default_output
                    logger.warning("Cannot open a window (%s): writing the stream to %s instead.",
                                   str(error).strip().splitlines()[-1], output)
                else:
                    if quit_pressed:
                        break
            if output is not None:
                with times.stage("encode"):
                    if writer is None:
                        temporary = stack.enter_context(atomic_write(output))
                        writer = open_video_writer(temporary, fps, size, name=output)
                    writer.write(canvas)
            frames += 1
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
        stack.close()  # the video moves into place once complete
    figures = _loop_figures(frames, size, time.perf_counter() - start, times) if frames else {}
    return {"frames": frames, "output": output, **figures}


def calibration_from_args(args):
    """The RGB images (each at its own size) drawn from ``args.calibration_data`` (its training subset where it has
    one), or None without that flag. The draw is seeded: the same images every run."""
    if not getattr(args, "calibration_data", None):
        return None
    if args.calibration_images < 1:
        raise ConfigError(f"--calibration_images {args.calibration_images}: give at least 1 (default: 64).")
    from segzoo import data

    with data.open_dataset(args.calibration_data) as dataset:
        return data.draw_images(dataset, args.calibration_images, subset="train")


def predictor_from_args(args):
    """``(FramePredictor, colors, class_names)`` from parsed
    :func:`segzoo.cli.arguments.add_predictor_arguments` flags and ``args.checkpoint``; names and colours
    come from the checkpoint when it has them."""
    runtimes.check_calibration(args.runtime, args.calibration_data)  # before loading anything
    calibration = calibration_from_args(args)
    model = load_model(args.checkpoint)
    names, colors = model_classes(model)
    predictor = FramePredictor(model, args.input_size, args.smoothing, args.keep_largest, args.runtime,
                               args.argmax_at_stride, calibration_images=calibration)
    return predictor, colors, names


def model_classes(model):
    """``(class_names, colors)`` of the classes ``model`` predicts (two for a binary model): the ones
    saved in the checkpoint, else ``class <i>`` in the Pascal VOC palette."""
    count = postprocess.num_output_classes(model.num_classes)
    names = model.class_names or [f"class {i}" for i in range(count)]
    colors = model.class_colors or [tuple(int(v) for v in c) for c in voc_palette(count)]
    return list(names), [tuple(int(v) for v in c) for c in colors]
