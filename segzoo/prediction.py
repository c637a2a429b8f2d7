"""Predict a folder of images, and rank unlabelled images by how unsure the model is.

The labelling loop after a first training: :func:`predict_folder` writes, for
every image of a folder (recursively, extension in any case), its class ids,
a colour mask, an overlay and optionally the winning-class probability, and
with ``"cvat"`` among the formats a "Segmentation mask 1.1" zip that CVAT
imports as pre-annotations (:mod:`segzoo.data.cvat_writer`).
:func:`rank_images` orders images by the model's uncertainty (mean per-pixel
entropy, or the share of pixels whose two best classes are close), skipping
near-duplicates, so that the images worth labelling come first.

Both run the model through :class:`segzoo.inference.FramePredictor` (Keras,
LiteRT or ONNX Runtime), in batches, at a chosen model size (then resized back
to each image's size) or in tiles (:func:`sliding_window_predict`).

Output folder of :func:`predict_folder`, ids as in the input folder::

    classes/<id>.png       class ids, single-channel uint8
    colors/<id>.png        the classes in the label map's colours
    overlays/<id>.png      the image with the classes painted over it and a legend
    confidence/<id>.png    probability of the winning class, 16-bit (0..65535 = 0..1), if asked
    classes.json           class names and colours, index = class id
    cvat_preannotations.zip  with the "cvat" format
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import shutil

import cv2
import numpy as np
from tqdm.auto import tqdm

from segzoo.data.folder import list_files
from segzoo.data.io import IMAGE_EXTENSIONS, DataError, read_image, write_image, write_label
from segzoo.errors import option
from segzoo.files import atomic_write, check_output_folder, write_json

logger = logging.getLogger(__name__)

FORMATS = ("png", "cvat")
CVAT_ZIP = "cvat_preannotations.zip"
SCORES = ("entropy", "margin")
RANKING_CSV = "ranking.csv"
TOP_LIST = "top.txt"
TOP_DIR = "to_label"
#: Largest Hamming distance (of 64 bits) between the difference hashes of two near-duplicate images.
DEFAULT_DUPLICATE_DISTANCE = 6


def list_images(folder) -> dict[str, str]:
    """Id -> path of every image below ``folder``: the id is the relative path without extension.

    Subfolders are searched; extensions (:data:`segzoo.data.io.IMAGE_EXTENSIONS`)
    match in any case. Raises :class:`DataError` for a missing folder, a folder
    without images, or two images sharing an id (``a.jpg`` and ``a.png``).
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such folder ({option('images')}: the folder of images to predict).")
    images = list_files(folder, IMAGE_EXTENSIONS)
    if not images:
        raise DataError(f"{folder}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)}, in any case, "
                        f"in subfolders too).")
    return dict(sorted(images.items()))


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of ``window`` pixels covering ``length`` pixels, ``stride`` apart, the last
    flush with the end (a single window at 0 when ``length <= window``)."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


def sliding_window_predict(forward, image, window, overlap=0.25, batch_size=4) -> np.ndarray:
    """Probabilities of a large image from overlapping windows (tiles) at full resolution.

    Windows of ``window`` ``(h, w)`` pixels step by ``(1 - overlap)`` of their
    size, the last one of each row and column flush with the image's edge;
    where windows overlap, their probabilities are averaged. An image smaller
    than the window is padded (edge pixels repeated) up to it. One window
    covering the whole image gives exactly ``forward`` on the whole image.

    Args:
        forward: ``images float32 (B, h, w, 3) -> probabilities (B, h, w, K)`` (numpy),
            e.g. :meth:`segzoo.inference.FramePredictor.probabilities`.
        image: RGB ``(H, W, 3)``, values 0..255.
        window: ``(h, w)`` of each window, sizes the model accepts.
        overlap: fraction of a window shared with its neighbour, in ``[0, 1)``.
        batch_size: windows per call of ``forward``.

    Returns:
        ``float32 (H, W, K)`` probabilities.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1); got {overlap}.")
    height, width = image.shape[:2]
    win_h, win_w = (int(v) for v in window)
    padded = np.asarray(image, np.float32)
    if height < win_h or width < win_w:
        padded = np.pad(padded, ((0, max(win_h - height, 0)), (0, max(win_w - width, 0)), (0, 0)), mode="edge")
    full_h, full_w = padded.shape[:2]
    stride_h, stride_w = (max(1, int(round(size * (1.0 - overlap)))) for size in (win_h, win_w))
    corners = [(y, x) for y in window_starts(full_h, win_h, stride_h) for x in window_starts(full_w, win_w, stride_w)]
    total = counts = None
    for start in range(0, len(corners), batch_size):
        chunk = corners[start:start + batch_size]
        probabilities = np.asarray(forward(np.stack([padded[y:y + win_h, x:x + win_w] for y, x in chunk])))
        if total is None:
            total = np.zeros((full_h, full_w, probabilities.shape[-1]), np.float32)
            counts = np.zeros((full_h, full_w, 1), np.float32)
        for (y, x), p in zip(chunk, probabilities):
            total[y:y + win_h, x:x + win_w] += p
            counts[y:y + win_h, x:x + win_w] += 1.0
    return (total / counts)[:height, :width]


def _predict_images(predictor, paths, batch_size, tile, overlap, desc, progress):
    """Yield ``(id, image, class ids, probabilities)`` for each ``id -> path`` of ``paths``, in batches."""
    from segzoo.inference import keep_largest_regions

    ids = list(paths)
    with tqdm(total=len(ids), desc=desc, unit="image", disable=not progress) as bar:
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            images = [read_image(paths[i]) for i in chunk]
            if tile:
                results = []
                for image in images:
                    probabilities = sliding_window_predict(predictor.probabilities, image, tile, overlap, batch_size)
                    classes = probabilities.argmax(axis=-1).astype(np.uint8)
                    if predictor.keep_largest:
                        classes = keep_largest_regions(classes, predictor.keep_largest)
                    results.append((classes, probabilities))
            else:
                results = predictor.predict_batch(images)
            for item_id, image, (classes, probabilities) in zip(chunk, images, results):
                yield item_id, image, classes, probabilities
            bar.update(len(chunk))


def _check_tile(predictor, tile):
    if tile is None:
        return None
    divisor = getattr(predictor.model, "size_divisor", 1)
    tile = tuple(int(v) for v in tile)
    if len(tile) != 2 or any(v <= 0 or v % divisor for v in tile):
        raise DataError(f"{option('tile')} {tile}: the window height and width must be positive multiples of the "
                        f"model's size divisor {divisor}.")
    return tile


def predict_folder(predictor, images_dir, output_dir, class_names, colors, formats=("png",), confidence=False,
                   tile=None, overlap=0.25, batch_size=4, overwrite=False, progress=True) -> dict:
    """Predict every image below ``images_dir`` and write the results into ``output_dir``.

    See the module docstring for the files written.

    Args:
        predictor: a :class:`segzoo.inference.FramePredictor` (its ``input_size``,
            ``keep_largest`` and ``runtime`` apply; its smoothing does not).
        images_dir: folder of images, searched recursively.
        output_dir: the output folder; an existing non-empty one is refused unless ``overwrite``.
        class_names: names of the predicted classes (class id order, background first).
        colors: ``(r, g, b)`` per class.
        formats: ``"png"`` (class ids, colour masks, overlays) and/or ``"cvat"`` (the CVAT zip).
        confidence: also write the winning class's probability as a 16-bit PNG.
        tile: ``(h, w)``: predict each image at full resolution in overlapping
            windows of this size (:func:`sliding_window_predict`) instead of
            resizing it to the model size.
        overlap: with ``tile``, the fraction shared by neighbouring windows.
        batch_size: images (or windows) per model call.
        overwrite: write into a non-empty ``output_dir``, replacing files of the same names.
        progress: show a progress bar.

    Returns:
        ``{"images": count, "output": output_dir, "cvat_zip": path or None, "class_pixels": {name: share}}``.
    """
    from segzoo.data.cvat_writer import CvatWriter
    from segzoo.inference import draw_overlay

    formats = tuple(formats)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise DataError(f"{option('format')} {' '.join(formats)}: choose among {', '.join(FORMATS)}.")
    paths = list_images(images_dir)
    output_dir = check_output_folder(output_dir, overwrite=overwrite, input_folders=(images_dir,))
    tile = _check_tile(predictor, tile)
    if len(class_names) != len(colors):
        raise DataError(f"{len(class_names)} class names but {len(colors)} colours.")
    palette = np.array(colors, np.uint8)
    os.makedirs(output_dir, exist_ok=True)
    writer = CvatWriter(os.path.join(output_dir, CVAT_ZIP), class_names, colors, overwrite=overwrite) \
        if "cvat" in formats else None
    pixels = np.zeros(len(class_names), np.int64)
    try:
        for item_id, image, classes, probabilities in _predict_images(predictor, paths, batch_size, tile, overlap,
                                                                      "predicting", progress):
            pixels += np.bincount(classes.ravel(), minlength=len(class_names))[:len(class_names)]
            if "png" in formats:
                write_label(os.path.join(output_dir, "classes", item_id + ".png"), classes)
                write_image(os.path.join(output_dir, "colors", item_id + ".png"), palette[classes])
                write_image(os.path.join(output_dir, "overlays", item_id + ".png"),
                            draw_overlay(image, classes, colors, class_names))
            if confidence:
                winning = np.take_along_axis(probabilities, classes[..., None].astype(np.int64), axis=-1)[..., 0]
                _write_uint16(os.path.join(output_dir, "confidence", item_id + ".png"),
                              np.round(np.clip(winning, 0.0, 1.0) * 65535.0).astype(np.uint16))
            if writer is not None:
                writer.write(item_id, classes)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    cvat_zip = writer.close() if writer is not None else None
    write_json(os.path.join(output_dir, "classes.json"),
               {"class_names": list(class_names), "colors": [list(map(int, c)) for c in colors]})
    shares = pixels / max(int(pixels.sum()), 1)
    return {"images": len(paths), "output": output_dir, "cvat_zip": cvat_zip,
            "class_pixels": {name: float(s) for name, s in zip(class_names, shares)}}


def _write_uint16(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ok, buffer = cv2.imencode(".png", array)
    if not ok:
        raise DataError(f"{path}: OpenCV could not encode an array of shape {array.shape}.")
    buffer.tofile(path)


# -- ranking -----------------------------------------------------------------

def uncertainty(probabilities, score="entropy", margin=0.1) -> float:
    """How unsure a prediction is, 0 (certain) to 1, from probabilities ``(H, W, K)``.

    ``"entropy"``: mean per-pixel entropy divided by ``log K``. ``"margin"``:
    share of pixels whose two highest probabilities are less than ``margin`` apart.
    """
    p = np.asarray(probabilities, np.float64)
    if score == "entropy":
        entropy = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=-1)
        return float(entropy.mean() / np.log(p.shape[-1]))
    if score == "margin":
        top_two = np.sort(p, axis=-1)[..., -2:]
        return float(((top_two[..., 1] - top_two[..., 0]) < margin).mean())
    raise ValueError(f"score must be one of {SCORES}; got {score!r}.")


def image_hash(image) -> int:
    """A 64-bit difference hash of an RGB image: near-duplicates (frames of one scene) differ in few bits."""
    gray = cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


@dataclasses.dataclass(frozen=True)
class RankedImage:
    """One image of a ranking: ``id`` (relative path without extension), ``path``, ``score`` (0..1, higher
    is less sure) and ``duplicate_of`` (the id of a higher-ranked near-duplicate, or ``None``)."""

    id: str
    path: str
    score: float
    duplicate_of: str | None = None


def rank_images(predictor, images_dir, score="entropy", margin=0.1, duplicate_distance=DEFAULT_DUPLICATE_DISTANCE,
                tile=None, overlap=0.25, batch_size=4, progress=True) -> list[RankedImage]:
    """Order the images below ``images_dir`` by how unsure the model is, most unsure first.

    Near-duplicates (difference hashes within ``duplicate_distance`` bits of an
    image ranked above) are moved to the end with ``duplicate_of`` set, so that
    ten frames of one scene do not fill the top of the list; a negative
    ``duplicate_distance`` keeps every image in score order.

    Args:
        predictor: a :class:`segzoo.inference.FramePredictor`.
        images_dir: folder of images, searched recursively.
        score: ``"entropy"`` or ``"margin"`` (see :func:`uncertainty`).
        margin: for ``"margin"``, the top-two probability gap that counts as unsure.
        duplicate_distance: bits of 64 within which two images are near-duplicates.
        tile, overlap, batch_size, progress: as in :func:`predict_folder`.
    """
    if score not in SCORES:
        raise DataError(f"{option('score')} {score!r}: choose one of {', '.join(SCORES)}.")
    paths = list_images(images_dir)
    tile = _check_tile(predictor, tile)
    scored = []
    for item_id, image, _, probabilities in _predict_images(predictor, paths, batch_size, tile, overlap,
                                                            "scoring", progress):
        scored.append((uncertainty(probabilities, score, margin), item_id, image_hash(image)))
    scored.sort(key=lambda s: (-s[0], s[1]))
    kept, duplicates = [], []
    for value, item_id, fingerprint in scored:
        original = next((k_id for _, k_id, k_hash, _ in kept
                         if duplicate_distance >= 0 and bin(fingerprint ^ k_hash).count("1") <= duplicate_distance),
                        None)
        (kept if original is None else duplicates).append((value, item_id, fingerprint, original))
    return [RankedImage(item_id, paths[item_id], value, original) for value, item_id, _, original in
            kept + duplicates]


def write_ranking(ranking, output_dir, top=20, copy=False, images_dir=None, overwrite=False) -> dict:
    """Write a ranking from :func:`rank_images` into ``output_dir``.

    Files: ``ranking.csv`` (``rank, path, score, near_duplicate_of``, every
    image), ``top.txt`` (the paths of the ``top`` best-ranked images that are not
    near-duplicates, one a line, for upload to CVAT) and, with ``copy``,
    ``to_label/`` holding copies of those images under their relative paths.

    Returns:
        ``{"csv": path, "top_list": path, "top": [RankedImage, ...], "copied": folder or None}``.
    """
    output_dir = check_output_folder(output_dir, overwrite=overwrite, input_folders=(images_dir,))
    os.makedirs(output_dir, exist_ok=True)
    csv_path = os.path.join(output_dir, RANKING_CSV)
    with atomic_write(csv_path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as f:
        table = csv.writer(f)
        table.writerow(["rank", "path", "score", "near_duplicate_of"])
        for rank, item in enumerate(ranking, start=1):
            table.writerow([rank, item.path, f"{item.score:.6f}", item.duplicate_of or ""])
    chosen = [item for item in ranking if item.duplicate_of is None][:max(int(top), 0)]
    top_path = os.path.join(output_dir, TOP_LIST)
    with atomic_write(top_path) as temporary, open(temporary, "w", encoding="utf-8") as f:
        f.writelines(item.path + "\n" for item in chosen)
    copied = None
    if copy:
        copied = os.path.join(output_dir, TOP_DIR)
        for item in chosen:
            target = os.path.join(copied, item.id + os.path.splitext(item.path)[1])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(item.path, target)
    return {"csv": csv_path, "top_list": top_path, "top": chosen, "copied": copied}
