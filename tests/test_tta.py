"""segzoo.tta: flipped, rescaled and windowed passes averaged; evaluation with them."""

import cv2
import keras
import numpy as np
import pytest

from harness import TinyBackbone, TinyHead, random_images, random_labels
from segzoo import evaluation, postprocess
from segzoo.errors import ConfigError
from segzoo.inference import FramePredictor
from segzoo.metrics import confusion_matrix
from segzoo.models import SegmentationModel
from segzoo.prediction import sliding_window_predict
from segzoo.tta import TestTimeAugmentation, predict_probabilities

NAMES = ["background", "hole", "crack"]
SIZE = (32, 48)  # height, width; the tiny backbone's size divisor is 8


@pytest.fixture(scope="module")
def forward():
    """``images -> probabilities`` of a tiny untrained 3-class model."""
    return FramePredictor(SegmentationModel(TinyBackbone(), TinyHead(3))).probabilities


@pytest.fixture(scope="module")
def images():
    return random_images(2, *SIZE, seed=1)


def by_hand(forward, images, size):
    """One pass at ``size`` (h, w), resized back to the images' size, bilinear as cv2 does it."""
    height, width = images.shape[1:3]
    scaled = np.stack([cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for image in images])
    return np.stack([cv2.resize(p, (width, height), interpolation=cv2.INTER_LINEAR) for p in forward(scaled)])


def test_one_window_covering_the_image_equals_whole_image_inference(forward, images):
    whole = forward(images)
    for window in (SIZE, (40, 56)):  # the image's size, and larger
        np.testing.assert_array_equal(predict_probabilities(forward, images, TestTimeAugmentation(window=window), 8),
                                      whole)


def test_smaller_windows_run_through_the_sliding_window(forward, images):
    tta = TestTimeAugmentation(window=(16, 24), overlap=0.5)
    expected = np.stack([sliding_window_predict(forward, image, (16, 24), 0.5, batch_size=2) for image in images])
    np.testing.assert_allclose(predict_probabilities(forward, images, tta, 8), expected, atol=1e-6)


def test_flip_is_the_mean_of_the_pass_and_the_mirrored_pass(forward, images):
    mirrored = forward(np.ascontiguousarray(images[:, :, ::-1]))[:, :, ::-1]
    expected = (forward(images) + mirrored) / 2
    np.testing.assert_allclose(predict_probabilities(forward, images, TestTimeAugmentation(flip=True), 8),
                               expected, atol=1e-6)


def test_scale_one_without_flip_is_plain_inference(forward, images):
    np.testing.assert_array_equal(predict_probabilities(forward, images, TestTimeAugmentation(), 8),
                                  forward(images))


def test_multi_scale_is_the_mean_of_the_passes_at_sizes_rounded_to_the_divisor(forward, images):
    # 32x48 times 0.5, 1.1 (35.2x52.8 -> 32x56) and 1.5
    expected = np.mean([by_hand(forward, images, size) for size in ((16, 24), (32, 56), (48, 72))], axis=0)
    averaged = predict_probabilities(forward, images, TestTimeAugmentation(scales=(0.5, 1.1, 1.5)), 8)
    assert averaged.shape == (2, *SIZE, 3) and averaged.dtype == np.float32
    np.testing.assert_allclose(averaged, expected, atol=1e-6)
    np.testing.assert_allclose(averaged.sum(-1), 1.0, atol=1e-5)


def test_a_binary_model_averages_its_foreground_probability(images):
    model = SegmentationModel(TinyBackbone(), TinyHead(1))
    logits = evaluation.compiled_forward(model)  # batch norm folded, as FramePredictor runs it
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-keras.ops.convert_to_numpy(logits(x))[..., 0]))  # noqa: E731
    expected = (sigmoid(images) + sigmoid(np.ascontiguousarray(images[:, :, ::-1]))[:, :, ::-1]) / 2
    averaged = predict_probabilities(FramePredictor(model).probabilities, images, TestTimeAugmentation(flip=True), 8)
    np.testing.assert_allclose(averaged[..., 1], expected, atol=1e-6)
    np.testing.assert_allclose(averaged[..., 0], 1.0 - expected, atol=1e-6)

    # scored as a binary model is: any foreground id counts as 1, foreground where the mean is above 0.5
    labels = random_labels(2, *SIZE, 3, seed=2)
    report = evaluation.evaluate_segmentation(model, [(images, labels)], ["background", "object"], progress=False,
                                              tta=TestTimeAugmentation(flip=True))
    assert report["confusion_matrix"] == confusion_matrix(labels > 0, expected > 0.5, 2).tolist()
    assert report["forward_passes_per_image"] == 2


@pytest.mark.parametrize("channels", [1, 3])
def test_averaged_probabilities_become_logits_that_give_them_back(channels):
    logits = np.random.default_rng(4).normal(0, 3, (2, 8, 8, channels)).astype("float32")
    probabilities = postprocess.probabilities(logits)
    back = postprocess.logits_from_probabilities(probabilities, channels)
    assert tuple(back.shape) == logits.shape
    np.testing.assert_allclose(keras.ops.convert_to_numpy(postprocess.probabilities(back)),
                               keras.ops.convert_to_numpy(probabilities), atol=1e-6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(postprocess.classes(back)),
                                  keras.ops.convert_to_numpy(postprocess.classes(logits)))


def test_logits_instead_of_probabilities_are_refused(images):
    model = SegmentationModel(TinyBackbone(), TinyHead(3))
    logits = lambda x: keras.ops.convert_to_numpy(model(x)) * 100  # noqa: E731
    with pytest.raises(ValueError, match="not logits"):
        predict_probabilities(logits, images, TestTimeAugmentation(), 8)


@pytest.mark.parametrize("fields, fragments", [
    ({"scales": (1.0, 0.0)}, ("scales=", "1.0 0.0", "positive")),
    ({"scales": (-0.5,)}, ("-0.5", "positive")),
    ({"overlap": 1.0}, ("overlap=", "1.0", "[0, 1)")),
    ({"overlap": -0.1}, ("-0.1", "[0, 1)")),
    ({"window": (0, 16)}, ("window=", "0 16", "positive")),
])
def test_a_bad_configuration_names_the_value_and_the_fix(fields, fragments):
    with pytest.raises(ConfigError) as error:
        TestTimeAugmentation(**fields)
    assert all(fragment in str(error.value) for fragment in fragments), error.value


def test_a_window_off_the_size_divisor_names_the_fix(forward, images):
    with pytest.raises(ConfigError, match=r"window= 30 48: .* size divisor 8; e\.g\. 32 48"):
        predict_probabilities(forward, images, TestTimeAugmentation(window=(30, 48)), 8)
    assert issubclass(ConfigError, ValueError)


def test_evaluation_with_tta_scores_the_averaged_probabilities_and_counts_the_passes(images):
    model = SegmentationModel(TinyBackbone(), TinyHead(3))
    forward = FramePredictor(model).probabilities
    labels = random_labels(2, *SIZE, 3, seed=3)
    tta = TestTimeAugmentation(flip=True, scales=(1.0, 1.5), window=(16, 24))
    report = evaluation.evaluate_segmentation(model, [(images[:1], labels[:1]), (images[1:], labels[1:])], NAMES,
                                              progress=False, tta=tta)
    predicted = np.concatenate([predict_probabilities(forward, image[None], tta, 8) for image in images]).argmax(-1)
    assert report["confusion_matrix"] == confusion_matrix(labels, predicted, 3).tolist()
    # windows of 16x24 stepping 11 and 16: 3x3 over 32x48, 4x4 over 48x72; twice with the flip
    assert report["forward_passes_per_image"] == 2 * (9 + 16)
    assert report["settings"] == {"flip": True, "scales": (1.0, 1.5), "window": (16, 24), "overlap": 1 / 3}
