import numpy as np
import pytest

from segzoo.data.overlay import IGNORE_COLOR, overlay_label


def test_overlay_tints_labelled_regions_outlines_them_and_leaves_background():
    image = np.full((32, 48, 3), 100, np.uint8)
    label = np.zeros((32, 48), np.uint8)
    label[8:24, 8:24] = 1
    label[8:24, 30:40] = 255
    colors = [(0, 0, 0), (250, 0, 0)]
    overlay = overlay_label(image, label, colors, alpha=0.5)

    assert overlay.dtype == np.uint8 and overlay.shape == image.shape
    np.testing.assert_array_equal(overlay[label == 0], image[label == 0])
    np.testing.assert_array_equal(overlay[16, 16], (175, 50, 50))  # inside: blended
    np.testing.assert_array_equal(overlay[8, 16], (250, 0, 0))  # border: full colour
    np.testing.assert_array_equal(overlay[8, 35], IGNORE_COLOR)
    np.testing.assert_array_equal(overlay[16, 35], (114, 114, 114))


def reference_overlay(image, label, colors, alpha):
    """The overlay written plainly in numpy, pixel by pixel rules of :func:`overlay_label`."""
    palette = np.zeros((256, 3), np.float64)
    palette[: len(colors)] = colors
    palette[255] = IGNORE_COLOR
    tint = palette[label]
    blended = np.floor(image * (1 - alpha) + tint * alpha + 0.5)  # cv2.addWeighted rounds half up
    painted = label != 0
    padded = np.pad(label, 1, mode="edge")
    windows = np.stack([padded[y:y + label.shape[0], x:x + label.shape[1]] for y in range(3) for x in range(3)])
    border = painted & (windows != label).any(axis=0)
    return np.where(border[..., None], tint, np.where(painted[..., None], blended, image)).astype(np.uint8)


def test_overlay_matches_the_plain_rules_on_random_labels_of_any_integer_type():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    label = rng.integers(0, 4, (40, 56)).astype(np.uint8)
    label[rng.random(label.shape) < 0.05] = 255
    colors = [(0, 0, 0), (200, 10, 10), (10, 200, 10), (10, 10, 200)]
    expected = reference_overlay(image, label, colors, 0.4)
    np.testing.assert_array_equal(overlay_label(image, label, colors, alpha=0.4), expected)
    np.testing.assert_array_equal(overlay_label(image, label.astype(np.int32), colors, alpha=0.4), expected)
    with pytest.raises(ValueError, match="0..255"):
        overlay_label(image, label.astype(np.int32) + 300, colors)
