"""Colour overlays of label masks, for people to check a dataset by eye."""

from __future__ import annotations

import cv2
import numpy as np

from segzoo.constants import BACKGROUND_ID, IGNORE_INDEX

#: Colour of ignored pixels in an overlay (RGB).
IGNORE_COLOR = (128, 128, 128)


def overlay_label(image, label, colors, ignore_index=IGNORE_INDEX, alpha=0.5) -> np.ndarray:
    """Blend class colours over an image and outline every labelled region.

    Background pixels (id 0) are left as they are; every other class is blended
    with its colour, ``ignore_index`` pixels with grey, and the pixels on the
    border of each such region are drawn in its full colour.

    Args:
        image: RGB ``uint8`` array ``(H, W, 3)``.
        label: class ids, ``uint8`` array ``(H, W)``.
        colors: ``(r, g, b)`` per class id.
        ignore_index: label value drawn in :data:`IGNORE_COLOR`.
        alpha: weight of the class colour in the blend, 0..1.

    Returns:
        The overlay, RGB ``uint8`` ``(H, W, 3)``.
    """
    image, label = np.asarray(image), np.asarray(label)
    if image.shape[:2] != label.shape:
        raise ValueError(f"image shape {image.shape} and label shape {label.shape} differ.")
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(colors)] = colors
    palette[ignore_index] = IGNORE_COLOR
    tint = palette[label]
    painted = label != BACKGROUND_ID
    overlay = image.copy()
    blended = cv2.addWeighted(image, 1.0 - alpha, tint, alpha, 0.0)
    overlay[painted] = blended[painted]
    # A pixel is on a border when its 3x3 neighbourhood holds another value.
    kernel = np.ones((3, 3), np.uint8)
    border = painted & ((cv2.erode(label, kernel) != label) | (cv2.dilate(label, kernel) != label))
    overlay[border] = tint[border]
    return overlay



def voc_palette(n: int) -> np.ndarray:
    """The standard Pascal VOC palette, ``(n, 3)`` uint8: 0 black, 1 (128,0,0), 2 (0,128,0), ..."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        value = index
        for bit in range(7, -1, -1):
            for channel in range(3):
                palette[index, channel] |= ((value >> channel) & 1) << bit
            value >>= 3
    return palette
