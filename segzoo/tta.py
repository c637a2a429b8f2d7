"""Test-time augmentation: flipped and rescaled passes, optionally in sliding windows, averaged.

:func:`predict_probabilities` runs a model on a batch at several scales, each
optionally also mirrored left-right, resizes every pass's probabilities back to
the batch's size and averages them (the mean of probabilities, as MMSegmentation
and PaddleSeg do). With a ``window``, each pass over an image larger than the
window runs in overlapping windows through
:func:`segzoo.prediction.sliding_window_predict`.

Probabilities, not logits, are averaged: a binary (1-channel sigmoid) model's
probabilities are ``[1 - p, p]`` (:func:`segzoo.postprocess.probabilities`), so
its foreground probability ``p`` is what gets averaged.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from segzoo.errors import ConfigError, option
from segzoo.prediction import sliding_window_predict


@dataclasses.dataclass(frozen=True)
class TestTimeAugmentation:
    """What test-time augmentation runs.

    Args:
        flip: also run each scale on the left-right mirrored images (twice the passes).
        scales: image size factors; each runs at the size times the factor, rounded to the model's size divisor.
        window: ``(h, w)``: run each pass over an image larger than this in overlapping windows of this
            size (multiples of the model's size divisor); ``None``: the whole image at once.
        overlap: with ``window``, the fraction of a window shared with its neighbour, in ``[0, 1)``.
    """

    __test__ = False  # not a pytest test class, despite its name

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    window: tuple[int, int] | None = None
    overlap: float = 1 / 3

    def __post_init__(self):
        scales = tuple(float(s) for s in self.scales)
        if not scales or any(not s > 0 for s in scales):
            raise ConfigError(f"{option('scales')} {' '.join(map(str, self.scales))}: every scale must be a "
                              f"positive factor of the image size, e.g. 0.75 1.0 1.25 (1.0 is the image's own size).")
        window = None if self.window is None else tuple(int(v) for v in self.window)
        if window is not None and (len(window) != 2 or min(window) <= 0):
            raise ConfigError(f"{option('window')} {' '.join(map(str, self.window))}: give the window's height and "
                              f"width, two positive sizes in pixels.")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ConfigError(f"{option('overlap')} {self.overlap}: the overlap of neighbouring windows is a "
                              f"fraction in [0, 1), e.g. 0.33.")
        object.__setattr__(self, "flip", bool(self.flip))
        object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "overlap", float(self.overlap))

    def check(self, size_divisor):
        """Raise :class:`ConfigError` unless the window's sides are multiples of the model's ``size_divisor``."""
        if self.window is not None and any(v % size_divisor for v in self.window):
            fix = " ".join(str(max(size_divisor, int(round(v / size_divisor)) * size_divisor)) for v in self.window)
            raise ConfigError(f"{option('window')} {self.window[0]} {self.window[1]}: the window's height and width "
                              f"must be multiples of the model's size divisor {size_divisor}; e.g. {fix}.")

    def description(self) -> str:
        """One line for reports, e.g. ``"flip, scales 0.75 1 1.25, windows 512x512 (overlap 0.33)"``."""
        parts = ["flip"] if self.flip else []
        parts.append("scales " + " ".join(f"{s:g}" for s in self.scales))
        if self.window is not None:
            parts.append(f"windows {self.window[0]}x{self.window[1]} (overlap {self.overlap:.2g})")
        return ", ".join(parts)


def scaled_size(size, scale, size_divisor=1) -> tuple[int, int]:
    """``(h, w)`` of an image of ``size`` ``(H, W)`` times ``scale``, each rounded to a multiple of
    ``size_divisor`` (at least one divisor)."""
    return tuple(max(size_divisor, int(round(s * scale / size_divisor)) * size_divisor) for s in size)


def _resize(array, size):
    """``(H, W, C)`` array resized bilinearly to ``size`` ``(h, w)`` (unchanged when already that size)."""
    if array.shape[:2] == tuple(size):
        return array
    resized = cv2.resize(array, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return resized[..., None] if resized.ndim == 2 else resized  # cv2 drops a trailing axis of size 1


def _one_pass(forward, images, tta):
    """Probabilities ``(B, h, w, K)`` of ``images`` ``(B, h, w, 3)``: whole, or in windows when larger than one."""
    height, width = images.shape[1:3]
    if tta.window is None or (height <= tta.window[0] and width <= tta.window[1]):
        probabilities = np.asarray(forward(images), np.float32)
    else:
        probabilities = np.stack([sliding_window_predict(forward, image, tta.window, tta.overlap, len(images))
                                  for image in images])
    if probabilities.min() < 0.0 or probabilities.max() > 1.0 + 1e-5:
        raise ValueError(f"forward returned values in [{probabilities.min():g}, {probabilities.max():g}]: it must "
                         f"return probabilities (segzoo.postprocess.probabilities of the logits), not logits.")
    return probabilities


def predict_probabilities(forward, images, tta, size_divisor=1) -> np.ndarray:
    """Class probabilities of ``images`` averaged over the passes of ``tta``.

    For each scale the batch is resized (bilinear) to its size times the scale,
    rounded to a multiple of ``size_divisor`` (not resized where that is its own
    size), run through ``forward`` (with ``tta.flip``, the mirrored batch too,
    its output mirrored back), and the probabilities are resized back to
    ``(H, W)``; the result is their mean. With ``tta.window``, a pass over
    images larger than the window runs in windows
    (:func:`segzoo.prediction.sliding_window_predict`, ``B`` windows per call).

    Args:
        forward: ``images float32 (B, h, w, 3) 0..255 -> probabilities (B, h, w, K)`` (numpy), e.g.
            :meth:`segzoo.inference.FramePredictor.probabilities`; a binary model's as ``[1 - p, p]``.
        images: RGB ``(B, H, W, 3)``, values 0..255.
        tta: a :class:`TestTimeAugmentation`.
        size_divisor: the model's input height and width must be multiples of this.

    Returns:
        ``float32 (B, H, W, K)`` probabilities.

    Raises:
        ConfigError: if ``tta.window`` is not a multiple of ``size_divisor``.
        ValueError: if ``forward`` returns values outside ``[0, 1]`` (logits).
    """
    tta.check(size_divisor)
    images = np.asarray(images, np.float32)
    size = images.shape[1:3]
    total = None
    for scale in tta.scales:
        scaled = np.stack([_resize(image, scaled_size(size, scale, size_divisor)) for image in images])
        passes = [_one_pass(forward, scaled, tta)]
        if tta.flip:
            passes.append(_one_pass(forward, np.ascontiguousarray(scaled[:, :, ::-1]), tta)[:, :, ::-1])
        for probabilities in passes:
            restored = np.stack([_resize(np.ascontiguousarray(p), size) for p in probabilities])
            total = restored if total is None else total + restored
    return total / np.float32(len(tta.scales) * (2 if tta.flip else 1))


def cost(entry) -> str:
    """One line on the ``"tta"`` entry of an evaluation report: what ran and the forward passes per image."""
    settings = TestTimeAugmentation(**entry["settings"]).description()
    return (f"{settings}: {round(entry['forward_passes_per_image'], 2):g} forward passes per image "
            f"(the latency is that of one)")
