import numpy as np

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
