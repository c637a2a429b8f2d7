"""Online augmentation: random, mask-aware changes of each training image as the tf.data pipeline reads it.

:class:`OnlineAugment` holds the settings; :func:`augment_element` applies them
to one ``{"image", "label"}`` element (:func:`segzoo.data.load` maps it over a
training split). Offline augmentation, which writes augmented copies to a
folder once, is :mod:`segzoo.data.augment`.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class OnlineAugment:
    """Settings of the random, mask-aware augmentation of training images.

    In order, for each image: resize to ``image_size`` times a factor drawn
    from ``scale_range`` (image bilinear, label nearest); crop a random
    ``crop_size`` window (``image_size`` where it is ``None``), padding where
    the scaled image is smaller (image with ``pad_value``, label with
    ``ignore_index``); flip image and label
    left-right together with probability ``flip_prob``; then, on the image
    only, brightness, contrast, saturation and hue jitter (``None`` or 0 turns
    one off), each result clipped to 0..255. Every draw comes from
    ``load(seed=...)``.

    Attributes:
        scale_range: ``(low, high)`` factors of ``image_size``; ``(1, 1)`` keeps its scale.
        flip_prob: probability of a left-right flip.
        brightness: add up to this fraction of 255, up or down.
        contrast: scale the contrast by a factor in ``[1 - contrast, 1 + contrast]``.
        saturation: scale the saturation by a factor in ``[1 - saturation, 1 + saturation]``.
        hue: shift the hue by up to this fraction of the colour circle (at most 0.5).
        pad_value: image value (0..255) of padded pixels.
        crop_size: ``(height, width)`` of the training window, or ``None`` for
            ``image_size``: a smaller crop of the same scaled image costs less per
            step, so more steps fit a time budget, at the same object scales.
    """

    scale_range: tuple[float, float] = (0.5, 2.0)
    flip_prob: float = 0.5
    brightness: float | None = 0.2
    contrast: float | None = 0.2
    saturation: float | None = 0.3
    hue: float | None = 0.05
    pad_value: float = 0.0
    crop_size: tuple[int, int] | None = None

    def __post_init__(self):
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}.")
        for name, upper in (("flip_prob", 1.0), ("brightness", 1.0), ("contrast", 1.0), ("saturation", 1.0),
                            ("hue", 0.5)):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= upper:
                raise ValueError(f"{name} must be within 0..{upper}, got {value}.")
        if not 0 <= self.pad_value <= 255:
            raise ValueError(f"pad_value must be within 0..255, got {self.pad_value}.")
        if self.crop_size is not None and (len(self.crop_size) != 2 or min(self.crop_size) < 1):
            raise ValueError(f"crop_size must be (height, width) of positive sizes, got {self.crop_size}.")


def augment_element(element, seed, image_size, augment, ignore_index):
    """Apply ``augment`` (an :class:`OnlineAugment`) to one element, every draw from its own ``seed`` (shape ``(2,)``).

    ``element`` is a dict with ``"image"`` (float or uint8 ``(H, W, 3)``) and
    ``"label"`` (``(H, W)``), scaled relative to ``image_size`` (``(height, width)``); the result has both at
    ``augment.crop_size`` (``image_size`` where it is ``None``), the image float32 0..255.

    Written with tf.image and stateless random ops rather than Keras's
    preprocessing layers, after trying them on real tensors: RandomFlip and
    RandomCrop do keep masks aligned, but RandomZoom pads masks with the image
    fill value (0, background) where padding must be ``ignore_index``;
    RandomCrop neither scales nor pads; all of them draw from one seed state
    that parallel map calls consume in a different order on each run (two
    runs with the same seed differed), so reproducible runs would need them
    on whole batches in one sequential map, which measured 3.5 times slower
    than this per-image map on two cores (31 against 111 images/s at 640x480)
    and does not scale with cores. Here each element has its own seed.
    """
    scale_seed, place_seed, flip_seed, *colour_seeds = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=7))
    target = tf.constant(augment.crop_size or image_size, tf.int32)
    scale = tf.random.stateless_uniform([], scale_seed, *augment.scale_range)
    scaled = tf.maximum(tf.cast(tf.round(tf.constant(image_size, tf.float32) * scale), tf.int32), 1)
    image = tf.image.resize(element["image"], scaled, "bilinear")
    label = tf.image.resize(element["label"][..., None], scaled, "nearest")

    def uniform_int(fraction, upper):  # an integer in [0, upper] from a fraction in [0, 1)
        return tf.minimum(tf.cast(fraction * tf.cast(upper + 1, tf.float32), tf.int32), upper)

    fractions = tf.random.stateless_uniform([4], place_seed)
    pad = tf.maximum(target - scaled, 0)
    before = uniform_int(fractions[:2], pad)
    paddings = tf.concat([tf.stack([before, pad - before], axis=1), [[0, 0]]], axis=0)
    image = tf.pad(image, paddings, constant_values=augment.pad_value)
    label = tf.pad(label, paddings, constant_values=ignore_index)
    offset = uniform_int(fractions[2:], scaled + pad - target)
    image = tf.slice(image, tf.concat([offset, [0]], 0), tf.concat([target, [3]], 0))
    label = tf.slice(label, tf.concat([offset, [0]], 0), tf.concat([target, [1]], 0))

    flip = tf.random.stateless_uniform([], flip_seed) < augment.flip_prob
    image, label = tf.cond(flip, lambda: (tf.reverse(image, [1]), tf.reverse(label, [1])), lambda: (image, label))
    image = _jitter_colours(image, augment, colour_seeds)
    return dict(element, image=image, label=label[..., 0])


def _jitter_colours(image, augment, seeds):
    """Brightness, contrast, saturation and hue jitter of a float 0..255 image, clipped to 0..255."""
    def clip(x):
        return tf.clip_by_value(x, 0.0, 255.0)

    if augment.brightness:
        image = clip(tf.image.stateless_random_brightness(image, augment.brightness * 255.0, seeds[0]))
    if augment.contrast:
        image = clip(tf.image.stateless_random_contrast(image, 1 - augment.contrast, 1 + augment.contrast, seeds[1]))
    if augment.saturation or augment.hue:  # these two work on 0..1 images
        image = image / 255.0
        if augment.saturation:
            image = tf.image.stateless_random_saturation(
                image, 1 - augment.saturation, 1 + augment.saturation, seeds[2])
        if augment.hue:
            image = tf.image.stateless_random_hue(image, augment.hue, seeds[3])
        image = clip(image * 255.0)
    return image
