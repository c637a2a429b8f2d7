"""The whole job in one call: CVAT export -> augmentation -> TFDS -> training -> evaluation -> video -> LiteRT.

:func:`run_quickstart` runs segzoo's main job end to end and writes a report
folder. Without a CVAT export of the user's, it first generates a sample in
the exact CVAT "Segmentation mask 1.1" layout (holes and cracks on textured
surfaces, see :mod:`segzoo.data.synthetic`), plus unseen held-out images and
a video. ``segzoo quickstart`` is its command line.

Report folder::

    metrics.json          held-out mean IoU, per-class IoU, latency, parameters, GFLOPs, export check
    report.html           one page with the metrics and every picture below
    training_curves.png   loss and mean IoU per epoch, the best epoch marked
    predictions.png       image | truth | prediction | confidence, one row per held-out image
    per_class_iou.png     held-out IoU per class; confusion_matrix.png: the confusion matrix
    prediction.webm       the overlay video (VP8: plays in browsers and players)
    model.tflite          the LiteRT export (checked against the Keras model)
    checkpoints/          best.keras, last.keras, logs
    data/                 the sample export, its import, the augmented folder, the TFDS build
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import numpy as np

from segzoo import data, evaluation, export, inference, plots, report as reports
from segzoo import errors
from segzoo.errors import OutputExistsError
from segzoo.configs import QuickstartConfig, TrainConfig
from segzoo.training import check_config, train

logger = logging.getLogger(__name__)

#: Minutes the quickstart keeps for the steps after training (evaluation, video, export) within its budget.
AFTER_TRAINING_MINUTES = 1.0
#: Default training crop, per side, as a share of ``image_size`` (rounded down to :data:`CROP_MULTIPLE`).
CROP_SHARE = 0.8
#: The default crop's sides are multiples of this, which every preset's ``size_divisor`` (8 or 32) divides.
CROP_MULTIPLE = 32


def training_crop(image_size, crop_size=None):
    """The training window ``(H, W)``: ``crop_size``, else :data:`CROP_SHARE` of ``image_size`` per side.

    The default sides are rounded down to multiples of :data:`CROP_MULTIPLE` (at least that), so
    240x320 trains on 192x256 crops: 0.64 of the pixels, about 1.5x the steps in a time budget, where
    a slow CPU fits too few epochs of whole images (7 on 2 AVX2 cores, defect IoU 0.78).
    """
    if crop_size is not None:
        return tuple(int(s) for s in crop_size)
    return tuple(max(int(s * CROP_SHARE) // CROP_MULTIPLE * CROP_MULTIPLE, CROP_MULTIPLE) for s in image_size)


def _prepare_sample(config, data_dir):
    """Generate the training sample and the held-out sample; return (export, images, backgrounds, heldout, video)."""
    sample = data.make_cvat_sample(os.path.join(data_dir, "sample"), num_images=config.num_images,
                                   image_size=config.image_size, seed=config.seed, zip=True,
                                   video_frames=16 if config.fast else 60)
    heldout = data.make_cvat_sample(os.path.join(data_dir, "heldout_sample"), num_images=config.heldout_images,
                                    image_size=config.image_size, seed=config.seed + 1000, zip=True,
                                    video_frames=0, empty_fraction=0.0)
    heldout_folder = data.import_cvat(heldout.export, os.path.join(data_dir, "heldout"), binary=config.binary)
    return sample.export, None, sample.backgrounds, heldout_folder, sample.video


def run_quickstart(config: QuickstartConfig) -> dict:
    """Run the whole chain as ``config`` says; returns the summary written to ``metrics.json``."""
    config = config.effective()
    start = time.perf_counter()
    out = os.path.abspath(config.out)
    data_dir = os.path.join(out, "data")
    if os.path.exists(os.path.join(out, "metrics.json")):
        raise OutputExistsError(f"{out} already holds a quickstart report; choose another {errors.option('out')}.")
    tfds_dir, checkpoints = os.path.join(data_dir, "tfds"), os.path.join(out, "checkpoints")
    crop = training_crop(config.image_size, config.crop_size)
    # the training settings, checked before any work; the time budget is what the steps before training leave
    train_config = TrainConfig(
        data="segzoo_quickstart", data_dir=tfds_dir, preset=config.preset,
        epochs=config.epochs, batch_size=config.batch_size, image_size=tuple(config.image_size), crop_size=crop,
        weights=config.weights, learning_rate=config.learning_rate, warmup_epochs=min(1.0, config.epochs / 4),
        seed=config.seed, checkpoint_dir=checkpoints, progress=2)
    check_config(train_config)
    os.makedirs(data_dir, exist_ok=True)

    # 1. the CVAT export: the user's, or a generated sample with held-out images and a video
    if config.cvat:
        export_path, images, backgrounds, heldout, video = config.cvat, config.images, None, None, config.video
    else:
        export_path, images, backgrounds, heldout, video = _prepare_sample(config, data_dir)
        video = config.video or video
    dataset = data.read_cvat(export_path, images=images, binary=config.binary)
    logger.info("1/7 CVAT export %s: %d images (%d without a mask), classes %s", export_path, len(dataset),
                dataset.num_unlabelled, dataset.class_names)

    # 2. offline augmentation (background replacement when there are backgrounds)
    augmented = os.path.join(data_dir, "augmented")
    augment_config = data.AugmentConfig(copies=config.copies, seed=config.seed,
                                        background_prob=0.3 if backgrounds else 0.0)
    data.augment_dataset(dataset, augmented, augment_config, bg_path=backgrounds)
    logger.info("2/7 augmented: %s", augmented)

    # 3. the TFDS build
    data.build_dataset(augmented, name="segzoo_quickstart", data_dir=tfds_dir, seed=config.seed)
    logger.info("3/7 TFDS dataset segzoo_quickstart built in %s", tfds_dir)

    # 4. training
    budget = None
    if config.time_budget and not config.fast:
        budget = max(config.time_budget - (time.perf_counter() - start) / 60 - AFTER_TRAINING_MINUTES, 0.5)
    model, history = train(dataclasses.replace(train_config, time_budget=budget))
    plots.plot_training_curves(history, os.path.join(out, "training_curves.png"))
    model = inference.load_model(os.path.join(checkpoints, "best.keras"))
    epochs = len(history.get("loss", []))
    window = ("whole images" if crop == tuple(config.image_size) else
              f"{crop[1]}x{crop[0]} crops of images scaled around {config.image_size[1]}x{config.image_size[0]}")
    logger.info("4/7 trained %s for %d epochs on %s", config.preset, epochs, window)

    # 5. evaluation on held-out images (the validation split of a user's export)
    if heldout is not None:
        eval_data = data.load(heldout, "all", batch_size=1, image_size=tuple(config.image_size), shuffle=False)
    else:
        eval_data = data.load("segzoo_quickstart", "validation", batch_size=1, data_dir=tfds_dir,
                              image_size=tuple(config.image_size), shuffle=False)
    report = evaluation.evaluation_report(model, eval_data, model.class_names, (*config.image_size, 3),
                                          latency_runs=10 if config.fast else 50,
                                          latency_warmup=3 if config.fast else 10)
    logger.info("5/7 held-out mean IoU %.3f", report["mean_iou"])

    # 6. the video
    if video:
        predictor = inference.FramePredictor(model, input_size=config.image_size, smoothing=0.3)
        result = inference.predict_video(predictor, video, os.path.join(out, "prediction.webm"),
                                         model.class_colors, model.class_names)
        report["video"] = result
        logger.info("6/7 predicted %d video frames", result["frames"])

    # 7. LiteRT export, checked against the Keras model on held-out images
    checks = np.concatenate([np.asarray(images) for images, _ in eval_data.take(4)])
    exported = export.export_model(model, os.path.join(out, "model.tflite"), "litert",
                                   input_size=config.image_size, check_images=checks)
    report["export"] = dataclasses.asdict(exported)
    logger.info("7/7 LiteRT model written: %s", exported.path)  # its check was logged by export_model

    report.update(preset=config.preset, image_size=list(config.image_size), crop_size=list(crop), epochs=epochs,
                  history={k: [float(v) for v in values] for k, values in history.items()},
                  seconds=time.perf_counter() - start)
    rows = evaluation.prediction_rows(model, eval_data, model.class_colors, max_images=6)
    reports.save_evaluation(
        out, report, f"segzoo quickstart: {config.preset}", rows, model.class_colors,
        pictures=[("training curves", "training_curves.png")],
        videos=[("the overlay video", "prediction.webm")] if video else (),
        extra_rows=[("training", f"{epochs} epochs on {window}, {report['seconds'] / 60:.1f} min in all"),
                    ("LiteRT export", exported.summary())])
    return report
