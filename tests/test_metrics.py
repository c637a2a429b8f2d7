"""Tests for segzoo.metrics: against a confusion matrix counted pixel by pixel here."""


import keras
import numpy as np
import pytest

from harness import run_in_backend
from segzoo.losses import BinaryCrossEntropy, CrossEntropy
from segzoo.metrics import BoundaryIoU, MeanIoU, confusion_matrix, iou_from_confusion
from segzoo.postprocess import classes as class_ids_from_logits

IGNORE = 255
NUM_CLASSES = 4


def reference_confusion(truth, predicted, num_classes):
    """Count (truth, prediction) pairs pixel by pixel, skipping IGNORE and out-of-range truths."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    for t, p in zip(np.ravel(truth), np.ravel(predicted)):
        if t != IGNORE and 0 <= t < num_classes:
            cm[t, p] += 1
    return cm


def reference_mean_iou(cm):
    ious = [cm[c, c] / (cm[c].sum() + cm[:, c].sum() - cm[c, c])
            for c in range(len(cm)) if cm[c].sum() + cm[:, c].sum() > 0]
    return float(np.mean(ious)) if ious else 0.0


def make_batch(seed=0, channels=NUM_CLASSES, shape=(2, 12, 12), num_labels=NUM_CLASSES):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_labels, shape).astype(np.uint8)
    labels[rng.random(shape) < 0.15] = IGNORE
    logits = rng.standard_normal(shape + (channels,)).astype(np.float32)
    return labels, logits


def update(metric, labels, logits):
    metric.update_state(labels, logits)
    return float(keras.ops.convert_to_numpy(metric.result()))


# ---------------------------------------------------------------- numpy helpers

def test_numpy_confusion_matrix_counts_pairs_and_skips_ignored():
    labels, logits = make_batch()
    predicted = logits.argmax(-1)
    cm = confusion_matrix(labels, predicted, NUM_CLASSES)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, reference_confusion(labels, predicted, NUM_CLASSES))
    assert cm.sum() == (labels != IGNORE).sum()


def test_numpy_confusion_matrix_refuses_ids_out_of_range():
    with pytest.raises(ValueError, match=r"truth ids \[7\] are not class ids"):
        confusion_matrix(np.array([0, 7, IGNORE]), np.array([0, 1, 1]), 3)
    with pytest.raises(ValueError, match=r"predicted ids \[3\]"):
        confusion_matrix(np.array([0, 1]), np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="3 truth pixels but 2 predicted"):
        confusion_matrix(np.array([0, 1, 2]), np.array([0, 1]), 3)


def test_iou_from_confusion_gives_nan_for_absent_classes():
    cm = np.array([[3, 1, 0], [2, 4, 0], [0, 0, 0]])
    np.testing.assert_allclose(iou_from_confusion(cm), [3 / 6, 4 / 7, np.nan])


def test_class_ids_from_logits_binary_and_softmax():
    binary = np.array([[[[-0.5], [0.0], [2.0]]]], np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(class_ids_from_logits(binary)), [[[0, 0, 1]]])
    softmax = np.array([[[[1.0, 3.0, 2.0]]]], np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(class_ids_from_logits(softmax)), [[[1]]])


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_numpy_class_ids_are_the_backend_s_classes_ties_included(channels):
    from segzoo.postprocess import class_ids

    logits = np.random.default_rng(channels).normal(size=(2, 8, 9, channels)).astype(np.float32)
    logits[0, 0, 0] = 0.0  # a tie: the first maximum (class 0) wins, as in classes()
    ids = class_ids(logits)
    assert ids.dtype == np.uint8 and ids.shape == (2, 8, 9) and ids[0, 0, 0] == 0
    np.testing.assert_array_equal(ids, keras.ops.convert_to_numpy(class_ids_from_logits(logits)))


# ---------------------------------------------------------------- the streaming metric

def test_multiclass_matches_the_reference():
    labels, logits = make_batch()
    metric = MeanIoU(NUM_CLASSES)
    value = update(metric, labels, logits)
    cm = reference_confusion(labels, logits.argmax(-1), NUM_CLASSES)
    np.testing.assert_array_equal(metric.confusion_matrix(), cm)
    assert value == pytest.approx(reference_mean_iou(cm), rel=1e-6)
    np.testing.assert_allclose(metric.per_class_iou(), iou_from_confusion(cm))
    assert metric.excluded_pixels() == 0


def test_streaming_over_batches_equals_one_big_batch():
    batches = [make_batch(seed) for seed in range(3)]
    streamed = MeanIoU(NUM_CLASSES)
    for labels, logits in batches:
        streamed.update_state(labels, logits)
    whole = MeanIoU(NUM_CLASSES)
    whole.update_state(np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    np.testing.assert_array_equal(streamed.confusion_matrix(), whole.confusion_matrix())
    assert float(streamed.result()) == pytest.approx(float(whole.result()), rel=1e-7)
    assert streamed.confusion_matrix().sum() == sum((b[0] != IGNORE).sum() for b in batches)


def test_binary_model_thresholds_its_logit_and_counts_every_foreground_id():
    labels, logits = make_batch(seed=1, channels=1, num_labels=3)  # ids 0, 1, 2 and ignore
    metric = MeanIoU(num_classes=2)
    value = update(metric, labels, logits)
    truth = np.where(labels == IGNORE, IGNORE, labels > 0)
    cm = reference_confusion(truth, (logits[..., 0] > 0).astype(int), 2)
    np.testing.assert_array_equal(metric.confusion_matrix(), cm)
    assert value == pytest.approx(reference_mean_iou(cm), rel=1e-6)


def test_predicted_ids_with_from_logits_false():
    labels, logits = make_batch(seed=2)
    predicted = logits.argmax(-1).astype(np.int64)
    by_ids = MeanIoU(NUM_CLASSES, from_logits=False)
    by_ids.update_state(labels[..., None], predicted[..., None])
    by_logits = MeanIoU(NUM_CLASSES)
    by_logits.update_state(labels, logits)
    np.testing.assert_array_equal(by_ids.confusion_matrix(), by_logits.confusion_matrix())


def test_absent_classes_are_left_out_of_the_mean():
    labels = np.array([[[0, 0, 1, 1]]], np.uint8)
    predicted = np.array([[[0, 1, 1, 1]]])
    metric = MeanIoU(NUM_CLASSES, from_logits=False)
    metric.update_state(labels, predicted)
    np.testing.assert_allclose(metric.per_class_iou(), [1 / 2, 2 / 3, np.nan, np.nan])
    assert float(metric.result()) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_all_ignored_gives_zero_and_reset_clears_the_state():
    metric = MeanIoU(NUM_CLASSES)
    labels, logits = make_batch()
    assert update(metric, np.full_like(labels, IGNORE), logits) == 0.0
    assert metric.confusion_matrix().sum() == 0
    update(metric, labels, logits)
    assert metric.confusion_matrix().sum() > 0
    metric.reset_state()
    assert metric.confusion_matrix().sum() == 0 and float(metric.result()) == 0.0
    assert update(metric, labels, logits) == pytest.approx(
        reference_mean_iou(reference_confusion(labels, logits.argmax(-1), NUM_CLASSES)), rel=1e-6)


def test_labels_out_of_range_are_excluded_and_counted():
    labels, logits = make_batch(seed=3)
    labels[0, 0, :5] = NUM_CLASSES + 1
    metric = MeanIoU(NUM_CLASSES)
    metric.update_state(labels, logits)
    np.testing.assert_array_equal(metric.confusion_matrix(), reference_confusion(labels, logits.argmax(-1), NUM_CLASSES))
    assert metric.excluded_pixels() == 5


def test_counts_stay_exact_beyond_float32_precision():
    pixels = (1 << 21) + 1
    labels = np.zeros((1, 1, pixels), np.uint8)
    metric = MeanIoU(2, from_logits=False)
    for _ in range(9):  # 18874377 > 2**24: not representable as a float32
        metric.update_state(labels, labels)
    assert metric.confusion_matrix()[0, 0] == 9 * pixels
    assert float(metric.result()) == 1.0


# ---------------------------------------------------------------- boundary IoU

def reference_boundary(mask, width):
    """mask AND NOT its erosion by a (2 width + 1) square, outside the image being background."""
    padded = np.pad(mask, width, constant_values=False)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * width + 1, 2 * width + 1))
    return mask & ~windows.all(axis=(-2, -1))


def reference_boundary_counts(truth, predicted, num_classes, width):
    """Per-class boundary intersection and union, image by image; ignored pixels belong to no class."""
    intersection, union = np.zeros(num_classes), np.zeros(num_classes)
    for image_truth, image_predicted in zip(truth, predicted):
        scored = image_truth != IGNORE
        for c in range(num_classes):
            truth_band = reference_boundary(scored & (image_truth == c), width) & scored
            predicted_band = reference_boundary(scored & (image_predicted == c), width) & scored
            intersection[c] += (truth_band & predicted_band).sum()
            union[c] += (truth_band | predicted_band).sum()
    return intersection, union


def test_boundary_bands_counted_by_hand():
    truth = np.zeros((1, 11, 11), np.uint8)
    truth[0, 3:8, 3:8] = 1  # a 5 x 5 square: its band is the 16-pixel inner ring
    metric = BoundaryIoU(2, dilation_ratio=1 / (11 * 2 ** 0.5), from_logits=False)
    assert metric.band_width(11, 11) == 1
    metric.update_state(truth, truth)
    np.testing.assert_allclose(metric.per_class_iou(), [1.0, 1.0])
    metric.reset_state()
    metric.update_state(truth, np.zeros_like(truth))
    # background band: the image's outer ring (40) and the ring around the square (24);
    # an all-background prediction has only the outer ring.
    np.testing.assert_allclose(metric.per_class_iou(), [40 / 64, 0.0])


def test_boundary_iou_matches_the_reference():
    labels, logits = make_batch(seed=12, shape=(2, 20, 20))
    metric = BoundaryIoU(NUM_CLASSES, dilation_ratio=0.05)
    width = metric.band_width(20, 20)
    assert width == 1
    metric.update_state(labels, logits)
    intersection, union = reference_boundary_counts(labels, logits.argmax(-1), NUM_CLASSES, width)
    np.testing.assert_allclose(metric.per_class_iou(), intersection / union)
    assert float(metric.result()) == pytest.approx(np.mean(intersection / union), rel=1e-6)


def test_boundary_iou_punishes_shifted_edges_more_than_iou():
    truth = np.zeros((1, 64, 64), np.uint8)
    truth[0, 8:56, 8:56] = 1
    shifted = np.roll(truth, 2, axis=2)
    boundary, iou = BoundaryIoU(2, from_logits=False), MeanIoU(2, from_logits=False)
    boundary.update_state(truth, truth)
    assert float(boundary.result()) == 1.0
    boundary.reset_state()
    boundary.update_state(truth, shifted)
    iou.update_state(truth, shifted)
    assert boundary.band_width(64, 64) == 2
    assert float(boundary.result()) < float(iou.result()) - 0.3


def test_boundary_iou_binary_model_and_config():
    labels, logits = make_batch(seed=13, channels=1, num_labels=3, shape=(2, 20, 20))
    metric = BoundaryIoU(2, dilation_ratio=0.05)
    metric.update_state(labels, logits)
    truth = np.where(labels == IGNORE, IGNORE, labels > 0)
    intersection, union = reference_boundary_counts(truth, (logits[..., 0] > 0).astype(int), 2, 1)
    np.testing.assert_allclose(metric.per_class_iou(), intersection / union)
    config = metric.get_config()
    assert config == {"num_classes": 2, "ignore_index": IGNORE, "from_logits": True, "name": "boundary_iou",
                      "dilation_ratio": 0.05}
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(rebuilt) is BoundaryIoU and rebuilt.get_config() == config


# ---------------------------------------------------------------- errors

def test_bad_inputs_are_clear_errors():
    labels, logits = make_batch()
    with pytest.raises(ValueError, match=r"expects logits \(B, H, W, 3\)"):
        MeanIoU(3).update_state(labels, logits)
    with pytest.raises(ValueError, match="Use MeanIoU\\(num_classes=2\\)"):
        MeanIoU(3).update_state(labels, logits[..., :1])
    with pytest.raises(ValueError, match="use num_classes=2"):
        MeanIoU(1)
    with pytest.raises(ValueError, match="does not support sample_weight"):
        MeanIoU(NUM_CLASSES).update_state(labels, logits, sample_weight=np.ones(2))


# ---------------------------------------------------------------- serialization and Keras integration

def test_config_round_trip():
    metric = MeanIoU(5, ignore_index=None, from_logits=False, name="miou")
    config = metric.get_config()
    assert config == {"num_classes": 5, "ignore_index": None, "from_logits": False, "name": "miou"}
    assert MeanIoU.from_config(config).get_config() == config
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(rebuilt) is MeanIoU and rebuilt.get_config() == config


def tiny_model(channels):
    inputs = keras.Input((12, 12, 3))
    return keras.Model(inputs, keras.layers.Conv2D(channels, 1)(keras.layers.Rescaling(1 / 255)(inputs)))


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
@pytest.mark.parametrize("channels", [1, NUM_CLASSES])
def test_evaluate_reports_the_mean_iou_of_all_batches(channels, tmp_path):
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 255, (6, 12, 12, 3)).astype(np.float32)
    labels, _ = make_batch(seed=5, shape=(6, 12, 12))
    num_classes = 2 if channels == 1 else NUM_CLASSES
    model = tiny_model(channels)
    loss = BinaryCrossEntropy() if channels == 1 else CrossEntropy()
    model.compile(loss=loss, metrics=[MeanIoU(num_classes), BoundaryIoU(num_classes, dilation_ratio=0.1)])
    results = model.evaluate(images, labels, batch_size=2, verbose=0, return_dict=True)
    predicted = keras.ops.convert_to_numpy(class_ids_from_logits(model.predict(images, verbose=0)))
    truth = labels if channels > 1 else np.where(labels == IGNORE, IGNORE, labels > 0)
    expected = reference_mean_iou(reference_confusion(truth, predicted, num_classes))
    assert results["mean_iou"] == pytest.approx(expected, rel=1e-5)
    intersection, union = reference_boundary_counts(truth, predicted, num_classes, width=2)
    assert results["boundary_iou"] == pytest.approx(np.mean(intersection / union), rel=1e-5)

    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    reloaded = loaded.evaluate(images, labels, batch_size=3, verbose=0, return_dict=True)
    assert reloaded["mean_iou"] == pytest.approx(expected, rel=1e-5)
    assert reloaded["boundary_iou"] == pytest.approx(results["boundary_iou"], rel=1e-6)


# ---------------------------------------------------------------- other backends

_BACKEND_SCRIPT = """
import json, sys
import numpy as np
import keras
from segzoo.losses import CrossEntropy
from segzoo.metrics import BoundaryIoU, MeanIoU
data = np.load(sys.argv[1])
metric, boundary = MeanIoU(4), BoundaryIoU(4, dilation_ratio=0.1)
for labels, logits in zip(data["labels"], data["logits"]):
    metric.update_state(labels, logits)
    boundary.update_state(labels, logits)
inputs = keras.Input((12, 12, 3))
model = keras.Model(inputs, keras.layers.Conv2D(4, 1)(inputs))
model.set_weights([data["kernel"], data["bias"]])
model.compile(loss=CrossEntropy(), metrics=[MeanIoU(4), BoundaryIoU(4)])  # jit-compiled evaluation
evaluated = model.evaluate(data["images"], data["labels"].reshape(-1, 12, 12), batch_size=2, verbose=0,
                           return_dict=True)
print(json.dumps({"cm": metric.confusion_matrix().tolist(), "result": float(metric.result()),
                  "boundary": boundary.per_class_iou().tolist(), "evaluate": evaluated}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends_give_the_tensorflow_values(backend, tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("compares against the TensorFlow backend")
    batches = [make_batch(seed) for seed in range(3)]
    labels = np.stack([b[0] for b in batches])
    logits = np.stack([b[1] for b in batches])
    rng = np.random.default_rng(6)
    images = rng.uniform(0, 1, (6, 12, 12, 3)).astype(np.float32)
    kernel = rng.standard_normal((1, 1, 3, NUM_CLASSES)).astype(np.float32)
    bias = np.zeros(NUM_CLASSES, np.float32)
    np.savez(tmp_path / "batch.npz", labels=labels, logits=logits, images=images, kernel=kernel, bias=bias)
    values = run_in_backend(backend, _BACKEND_SCRIPT.replace("sys.argv[1]", repr(str(tmp_path / "batch.npz"))))

    metric = MeanIoU(NUM_CLASSES)
    for batch_labels, batch_logits in batches:
        metric.update_state(batch_labels, batch_logits)
    boundary = BoundaryIoU(NUM_CLASSES, dilation_ratio=0.1)
    for batch_labels, batch_logits in batches:
        boundary.update_state(batch_labels, batch_logits)
    np.testing.assert_array_equal(values["cm"], metric.confusion_matrix())
    assert values["result"] == pytest.approx(float(metric.result()), rel=1e-6)
    np.testing.assert_allclose(values["boundary"], boundary.per_class_iou(), rtol=1e-6)
    inputs = keras.Input((12, 12, 3))
    tf_model = keras.Model(inputs, keras.layers.Conv2D(NUM_CLASSES, 1)(inputs))
    tf_model.set_weights([kernel, bias])
    tf_model.compile(loss=CrossEntropy(), metrics=[MeanIoU(NUM_CLASSES), BoundaryIoU(NUM_CLASSES)])
    expected = tf_model.evaluate(images, labels.reshape(-1, 12, 12), batch_size=2, verbose=0, return_dict=True)
    assert values["evaluate"] == pytest.approx(expected, rel=1e-5)


_MIRRORED_SCRIPT = """
import json
import numpy as np
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from segzoo.losses import CrossEntropy
from segzoo.metrics import MeanIoU

rng = np.random.default_rng(0)
images = rng.uniform(0, 1, (6, 8, 8, 3)).astype("float32")
labels = rng.integers(0, 3, (6, 8, 8))
kernel = rng.standard_normal((1, 1, 3, 3)).astype("float32")
out = {}
for name, strategy in [("single", tf.distribute.get_strategy()),
                       ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]:
    with strategy.scope():
        inputs = keras.Input((8, 8, 3))
        model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
        model.set_weights([kernel, np.zeros(3, "float32")])
        metric = MeanIoU(3)
        model.compile(loss=CrossEntropy(), metrics=[metric])
    result = model.evaluate(images, labels, batch_size=4, verbose=0, return_dict=True)["mean_iou"]
    out[name] = {"result": result, "cm": metric.confusion_matrix().tolist()}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_mirrored_strategy_sums_the_replicas_counts():
    values = run_in_backend("tensorflow", _MIRRORED_SCRIPT)
    assert np.sum(values["mirrored"]["cm"]) == 6 * 8 * 8
    assert values["mirrored"]["cm"] == values["single"]["cm"]
    assert values["mirrored"]["result"] == pytest.approx(values["single"]["result"], rel=1e-6)
