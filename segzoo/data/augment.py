"""Offline augmentation: an ``rgb/`` + ``gt/`` folder with augmented copies of every item.

:func:`augment_dataset` writes, for every item of a dataset, the original
(same id) and ``config.copies`` augmented copies named
``segzoo.data.folder.augmented_id(source, k)``, each in its source's subset.
:func:`augment_pair` augments one image and its label.

Each copy applies a random subset of the operations of :class:`AugmentConfig`,
each drawn with its own probability (at least one, and never a copy identical
to its original), in this order:

1. ``object_color``: a hue and value shift inside every object only. An object
   is a connected component (8-connected) of one non-background class; each
   object draws its own shift.
2. ``background``: labelled pixels are pasted onto an image from ``bg_path``
   (scaled to cover the source size, then cropped at random); only background
   pixels (id 0) are replaced and the label is unchanged.
3. ``jitter``: hue, saturation and value of the whole image.
4. ``blur``: Gaussian blur (odd kernel) plus a brightness offset.
5. ``crop``, ``rotation``, ``shift``: one affine warp (crop-and-rescale to the
   source size, rotation about the centre, whole-pixel translation), so the
   image is interpolated once. Images use bilinear interpolation, labels
   nearest-neighbour: no label value is ever invented at an edge.

``object_color`` and ``background`` are never drawn for an item without an
object (a frame with no mask): they would change nothing, or replace every
pixel, so that copies of different frames came out as the same background
image.

Areas a warp brings in from outside the image follow ``border_mode``:
``"reflect"`` (default) mirrors image and label alike (OpenCV
``BORDER_REFLECT_101``), so the mirrored pixels carry their true labels;
``"constant"`` fills the image with black and the label with ``IGNORE_INDEX``,
so the filled area counts for nothing in training. Background would be a lie
in both cases, so it is never used.

Images stay ``uint8`` 0..255 from end to end; every arithmetic step clips to
0..255. The output is reproducible: copy ``k`` of item ``id`` depends only on
``(config.seed, id, k)`` (its random generator is seeded from a SHA-256 of the
id), never on the number of worker processes or on the order of the items.

Beside ``rgb/`` and ``gt/``, ``overlays/<id>.jpg`` holds a colour overlay of
every written item for people to check (see :func:`segzoo.data.overlay.overlay_label`);
no reader of the folder ever uses it for training.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import math
import multiprocessing
import os

import cv2
import numpy as np
from tqdm.auto import tqdm

from segzoo.constants import BACKGROUND_ID, IGNORE_INDEX
from segzoo.data.folder import FolderWriter, list_files, augmented_id
from segzoo.data.io import IMAGE_EXTENSIONS, DataError, read_image, write_image
from segzoo.data.overlay import overlay_label
from segzoo.files import atomic_write, check_output_folder
from segzoo.settings import config_field as _field

#: Folder of the output that holds the overlays for people; never read for training.
OVERLAYS_DIR = "overlays"

#: The operations, in the order a copy applies them.
OPERATIONS = ("object_color", "background", "jitter", "blur", "crop", "rotation", "shift")

_BORDER_MODES = ("reflect", "constant")
# Draws tried before a copy that equals its original is declared impossible.
_MAX_ATTEMPTS = 20


@dataclasses.dataclass
class AugmentConfig:
    """Which augmentations a copy may apply, how often and how strongly.

    Every ``<operation>_prob`` is the probability, 0..1, that a copy applies
    that operation (see the module docstring for the operations and their
    order). Ranges are ``(low, high)`` pairs drawn uniformly; lists are
    accepted and stored as tuples. The rotation, blur kernel, blur brightness
    and crop ranges are the original project's; the other ranges and every
    probability are segzoo's choices (two operations per copy on average).
    """

    copies: int = _field(9, "augmented copies written per source item (besides the original)")
    seed: int = _field(0, "random seed; the same seed gives byte-identical output")
    border_mode: str = _field(
        "reflect", "areas warped in from outside the image: 'reflect' mirrors image and label, "
        "'constant' fills the image with black and the label with the ignore index",
        choices=_BORDER_MODES)
    shift_prob: float = _field(0.3, "probability of a translation")
    shift_fraction: tuple[float, float] = _field(
        (0.05, 0.2), "translation per axis as a fraction of the image size (random sign)")
    rotation_prob: float = _field(0.4, "probability of a rotation about the centre")
    rotation_degrees: tuple[float, float] = _field((10.0, 45.0), "rotation angle in degrees (random sign)")
    crop_prob: float = _field(0.3, "probability of a crop rescaled back to the source size")
    crop_scale: tuple[float, float] = _field(
        (0.6, 0.95), "crop width and height as a fraction of the source's, 0 < scale <= 1")
    blur_prob: float = _field(0.2, "probability of a Gaussian blur plus a brightness offset")
    blur_kernel: tuple[int, int] = _field((7, 19), "blur kernel size in pixels, odd")
    blur_brightness: tuple[int, int] = _field(
        (50, 100), "brightness offset added to R, G and B with the blur, -255..255")
    jitter_prob: float = _field(0.5, "probability of a colour jitter of the whole image")
    jitter_hue_degrees: tuple[float, float] = _field((-10.0, 10.0), "hue shift in degrees, -180..180")
    jitter_saturation: tuple[float, float] = _field((0.7, 1.3), "saturation scale, >= 0")
    jitter_value: tuple[int, int] = _field((-40, 40), "value (brightness) shift, -255..255")
    object_color_prob: float = _field(0.3, "probability of a colour change inside each object only")
    object_hue_degrees: tuple[float, float] = _field(
        (-30.0, 30.0), "hue shift of each object in degrees, -180..180")
    object_value: tuple[int, int] = _field((-50, 50), "value (brightness) shift of each object, -255..255")
    background_prob: float = _field(
        0.0, "probability of pasting the labelled objects onto an image of bg_path (needs bg_path)")

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("_prob") and not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{field.name} must be in [0, 1], got {value}.")
            if isinstance(field.default, tuple):
                value = tuple(value)
                if len(value) != 2 or value[0] > value[1]:
                    raise ValueError(f"AugmentConfig.{field.name} must be a (low, high) pair with "
                                     f"low <= high, got {value}.")
                setattr(self, field.name, value)
        if self.copies < 0 or self.seed < 0:
            raise ValueError(f"AugmentConfig: copies ({self.copies}) and seed ({self.seed}) must be >= 0.")
        if self.copies and not self.enabled_operations():
            raise ValueError(f"AugmentConfig: copies is {self.copies} but every operation's probability "
                             f"is 0, so no copy could differ from its original.")
        if self.border_mode not in _BORDER_MODES:
            raise ValueError(f"AugmentConfig.border_mode must be one of {_BORDER_MODES}, got {self.border_mode!r}.")
        if self.blur_kernel[0] < 1 or any(k % 2 == 0 for k in self.blur_kernel):
            raise ValueError(f"AugmentConfig.blur_kernel must hold odd sizes >= 1, got {self.blur_kernel}.")
        if not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
            raise ValueError(f"AugmentConfig.crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}.")
        if self.jitter_saturation[0] < 0:
            raise ValueError(f"AugmentConfig.jitter_saturation must be >= 0, got {self.jitter_saturation}.")

    def enabled_operations(self) -> list[str]:
        """Names of the operations whose probability is above 0, in order of application."""
        return [op for op in OPERATIONS if getattr(self, f"{op}_prob") > 0]


# --------------------------------------------------------------------------- one image


def copy_rng(seed: int, item_id: str, copy: int) -> np.random.Generator:
    """The random generator of copy ``copy`` of ``item_id``: a function of its arguments only.

    The id enters through SHA-256 (Python's ``hash`` is salted per process).
    """
    digest = hashlib.sha256(item_id.encode("utf-8")).digest()
    words = np.frombuffer(digest, dtype="<u4").tolist()
    return np.random.default_rng(np.random.SeedSequence([seed, copy, *words]))


def _hue_units(degrees):
    # OpenCV stores the hue of uint8 images as degrees / 2, in 0..179.
    return int(round(degrees / 2.0))


def _shift_hsv(image, hue, saturation, value):
    """Shift hue (OpenCV units), scale saturation and shift value; scalars or (H, W) arrays."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.int32)
    h = np.mod(hsv[..., 0] + hue, 180)
    s = np.clip(np.rint(hsv[..., 1] * saturation), 0, 255)
    v = np.clip(hsv[..., 2] + value, 0, 255)
    return cv2.cvtColor(np.stack([h, s, v], axis=-1).astype(np.uint8), cv2.COLOR_HSV2RGB)


def _add_brightness(image, offset):
    return np.clip(image.astype(np.int16) + int(offset), 0, 255).astype(np.uint8)


def _object_color(image, label, rng, config):
    hue = np.zeros(label.shape, np.int32)
    value = np.zeros(label.shape, np.int32)
    inside = np.zeros(label.shape, bool)
    for class_id in np.unique(label):
        if class_id in (BACKGROUND_ID, IGNORE_INDEX):
            continue
        count, components = cv2.connectedComponents((label == class_id).astype(np.uint8), connectivity=8)
        shifts = np.zeros((count, 2), np.int32)  # row 0: outside the class
        for component in range(1, count):
            shifts[component] = (_hue_units(rng.uniform(*config.object_hue_degrees)),
                                 round(rng.uniform(*config.object_value)))
        mask = components > 0
        hue[mask], value[mask] = shifts[components[mask]].T
        inside |= mask
    if not inside.any():
        return image
    return np.where(inside[..., None], _shift_hsv(image, hue, 1.0, value), image)


def _fit_background(background, height, width, rng):
    """Scale ``background`` to cover ``(height, width)`` and crop it there at random."""
    bg_height, bg_width = background.shape[:2]
    scale = max(height / bg_height, width / bg_width)
    size = (max(width, math.ceil(bg_width * scale)), max(height, math.ceil(bg_height * scale)))
    resized = cv2.resize(background, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top = int(rng.integers(0, size[1] - height + 1))
    left = int(rng.integers(0, size[0] - width + 1))
    return resized[top: top + height, left: left + width]


def _replace_background(image, label, rng, backgrounds):
    if not backgrounds:
        raise ValueError("the 'background' operation is enabled but no backgrounds were given "
                         "(pass bg_path, or set background_prob to 0).")
    background = backgrounds[int(rng.integers(len(backgrounds)))]
    if not isinstance(background, np.ndarray):
        background = read_image(background)
    background = _fit_background(background, *label.shape, rng)
    return np.where((label == BACKGROUND_ID)[..., None], background, image)


def _jitter(image, rng, config):
    hue = _hue_units(rng.uniform(*config.jitter_hue_degrees))
    saturation = rng.uniform(*config.jitter_saturation)
    value = int(round(rng.uniform(*config.jitter_value)))
    return _shift_hsv(image, hue, saturation, value)


def _blur(image, rng, config):
    kernel = int(rng.choice(np.arange(config.blur_kernel[0], config.blur_kernel[1] + 1, 2)))
    blurred = cv2.GaussianBlur(image, (kernel, kernel), 0)
    return _add_brightness(blurred, round(rng.uniform(*config.blur_brightness)))


def _signed(rng, low, high):
    return float(rng.uniform(low, high)) * (1.0 if rng.random() < 0.5 else -1.0)


def _geometry(operations, height, width, rng, config):
    """The 3x3 forward affine matrix (source -> output pixel) of the geometric operations drawn."""
    matrix = np.eye(3)
    if "crop" in operations:
        scale = rng.uniform(*config.crop_scale)
        crop_w, crop_h = max(1, round(width * scale)), max(1, round(height * scale))
        left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
        sx, sy = width / crop_w, height / crop_h
        # Pixel centres: source x maps to (x - left + 0.5) * sx - 0.5.
        crop = np.array([[sx, 0, (0.5 - left) * sx - 0.5], [0, sy, (0.5 - top) * sy - 0.5], [0, 0, 1]])
        matrix = crop @ matrix
    if "rotation" in operations:
        angle = _signed(rng, *config.rotation_degrees)
        rotation = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), angle, 1.0)
        matrix = np.vstack([rotation, [0, 0, 1]]) @ matrix
    if "shift" in operations:
        dx = round(_signed(rng, *config.shift_fraction) * width)
        dy = round(_signed(rng, *config.shift_fraction) * height)
        matrix = np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]]) @ matrix
    return matrix


def _warp(image, label, matrix, border_mode):
    height, width = label.shape
    if border_mode == "reflect":
        border, image_fill, label_fill = cv2.BORDER_REFLECT_101, 0, 0
    else:
        border, image_fill, label_fill = cv2.BORDER_CONSTANT, (0, 0, 0), IGNORE_INDEX
    image = cv2.warpAffine(image, matrix[:2], (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=border, borderValue=image_fill)
    label = cv2.warpAffine(label, matrix[:2], (width, height), flags=cv2.INTER_NEAREST,
                           borderMode=border, borderValue=label_fill)
    return image, label


#: Operations that act on objects: nothing for them to do in an item without one.
OBJECT_OPERATIONS = ("object_color", "background")


def _draw_operations(rng, config, has_objects=True):
    """The operations of one copy: each drawn with its probability, at least one; none of
    :data:`OBJECT_OPERATIONS` for an item without objects."""
    possible = [op for op in OPERATIONS if has_objects or op not in OBJECT_OPERATIONS]
    chosen = [op for op in OPERATIONS if rng.random() < getattr(config, f"{op}_prob") and op in possible]
    if not chosen:
        enabled = [op for op in config.enabled_operations() if op in possible]
        if not enabled:
            raise DataError(f"this item has no object (no labelled pixel), and the operations enabled "
                            f"({', '.join(config.enabled_operations())}) act on objects only: enable another "
                            f"(jitter, blur, crop, rotation, shift), or remove the item.")
        chosen = [enabled[int(rng.integers(len(enabled)))]]
    return chosen


def _apply(operations, image, label, rng, config, backgrounds):
    if "object_color" in operations:
        image = _object_color(image, label, rng, config)
    if "background" in operations:
        image = _replace_background(image, label, rng, backgrounds)
    if "jitter" in operations:
        image = _jitter(image, rng, config)
    if "blur" in operations:
        image = _blur(image, rng, config)
    if {"crop", "rotation", "shift"} & set(operations):
        matrix = _geometry(operations, *label.shape, rng, config)
        image, label = _warp(image, label, matrix, config.border_mode)
    return image, label


def augment_pair(image, label, config: AugmentConfig, rng: np.random.Generator, backgrounds=()):
    """Make one augmented copy of an image and its label.

    Args:
        image: RGB ``uint8`` ``(H, W, 3)``.
        label: class ids ``uint8`` ``(H, W)``; 0 is background and
            ``segzoo.constants.IGNORE_INDEX`` an ignored pixel.
        config: the operations and their ranges; ``copies`` and ``seed`` are
            not used here.
        rng: the random generator (see :func:`copy_rng`).
        backgrounds: background images, as paths or RGB ``uint8`` arrays of
            any size; needed when ``config.background_prob > 0``.

    Returns:
        ``(image, label)`` of the same shapes and dtypes, never both equal to
        the inputs.

    Raises:
        DataError: when no draw of the enabled operations changes this item
            (for instance colour changes on a blank image).
    """
    image, label = np.asarray(image), np.asarray(label)
    if image.dtype != np.uint8 or label.dtype != np.uint8 or image.shape[:2] != label.shape:
        raise ValueError(f"expected an RGB uint8 image and a uint8 label of the same size, got "
                         f"{image.dtype} {image.shape} and {label.dtype} {label.shape}.")
    has_objects = bool(np.any((label != BACKGROUND_ID) & (label != IGNORE_INDEX)))
    for _ in range(_MAX_ATTEMPTS):
        out_image, out_label = _apply(_draw_operations(rng, config, has_objects), image, label, rng, config,
                                      backgrounds)
        if not (np.array_equal(out_image, image) and np.array_equal(out_label, label)):
            return out_image, out_label
    raise DataError(
        f"{_MAX_ATTEMPTS} draws of the operations {config.enabled_operations()} all left this item "
        f"unchanged (a blank image?). Enable a geometric operation or remove the item."
    )


# --------------------------------------------------------------------------- a dataset


@dataclasses.dataclass
class _Job:
    """Everything a worker process needs; pickled once per worker."""

    dataset: object
    writer: FolderWriter
    config: AugmentConfig
    backgrounds: list


def _augment_item(job, item_id):
    """Write the original and the copies of one item; return the ids written."""
    dataset, writer = job.dataset, job.writer
    image, label = dataset.load(item_id)
    if dataset.ignore_index != IGNORE_INDEX:
        label = np.where(label == dataset.ignore_index, IGNORE_INDEX, label).astype(np.uint8)
    outputs = [(item_id, image, label)]
    for copy in range(1, job.config.copies + 1):
        rng = copy_rng(job.config.seed, item_id, copy)
        try:
            augmented = augment_pair(image, label, job.config, rng, job.backgrounds)
        except DataError as error:
            raise DataError(f"{dataset.image_path(item_id)}: {error}") from error
        outputs.append((augmented_id(item_id, copy), *augmented))
    for output_id, out_image, out_label in outputs:
        writer.write(output_id, out_image, out_label)
        write_image(os.path.join(writer.root, OVERLAYS_DIR, output_id + ".jpg"),
                    overlay_label(out_image, out_label, writer.colors))
    return [output_id for output_id, _, _ in outputs]


def _augment_chunk(job, item_ids):
    return [written for item_id in item_ids for written in _augment_item(job, item_id)]


_WORKER_JOB = None


def _init_worker(job):
    global _WORKER_JOB
    _WORKER_JOB = job


def _augment_chunk_in_worker(item_ids):
    return _augment_chunk(_WORKER_JOB, item_ids)


def _list_backgrounds(bg_path, config):
    if bg_path is None:
        if config.background_prob > 0:
            raise ValueError(f"background_prob is {config.background_prob} but no bg_path was given: "
                             f"pass a folder of background images, or set background_prob to 0.")
        return []
    bg_path = os.fspath(bg_path)
    if not os.path.isdir(bg_path):
        raise DataError(f"{bg_path}: the background folder (bg_path) does not exist.")
    backgrounds = sorted(list_files(bg_path, IMAGE_EXTENSIONS).values())
    if not backgrounds:
        raise DataError(f"{bg_path}: the background folder (bg_path) holds no images "
                        f"({', '.join(IMAGE_EXTENSIONS)}).")
    if config.background_prob == 0:
        raise ValueError(f"bg_path {bg_path} was given but background_prob is 0, so it would be "
                         f"ignored: set background_prob above 0 (CLI: --background_prob).")
    return backgrounds


def _input_folders(dataset, bg_path):
    """The folders that augmenting ``dataset`` reads: those of its images and labels, and ``bg_path``."""
    label_path = getattr(dataset, "label_path", None)
    paths = [dataset.image_path(i) for i in dataset.ids]
    paths += [p for p in map(label_path, dataset.ids) if p is not None] if label_path else []
    return [*sorted({os.path.dirname(p) for p in paths}), bg_path]


def _with_copies(item_id, copies):
    """The ids written for ``item_id``: itself, then its copies."""
    return [item_id] + [augmented_id(item_id, k) for k in range(1, copies + 1)]


def _check_output_ids(dataset, copies):
    ids = {}
    for item_id in dataset.ids:
        for output_id in _with_copies(item_id, copies):
            if output_id in ids:
                raise DataError(f"the output id '{output_id}' comes from both '{ids[output_id]}' and "
                                f"'{item_id}': the source already holds augmented copies. Augment the "
                                f"un-augmented dataset instead.")
            ids[output_id] = item_id
    return ids


def _available_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _write_items(job, chunks, workers):
    """Augment every chunk of item ids with ``workers`` processes, recording the ids written in ``job.writer``."""
    writer = job.writer
    with tqdm(total=sum(map(len, chunks)), desc="augment", unit="image") as progress:
        if workers <= 1:
            for chunk in chunks:
                writer.written.update(_augment_chunk(job, chunk))
                progress.update(len(chunk))
            return
        # "spawn": forking a parent that runs TensorFlow or other threads can deadlock.
        with concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(job,)) as pool:
            futures = {pool.submit(_augment_chunk_in_worker, chunk): len(chunk) for chunk in chunks}
            try:
                for future in concurrent.futures.as_completed(futures):
                    writer.written.update(future.result())
                    progress.update(futures[future])
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


def augment_dataset(dataset, output_dir, config: AugmentConfig | None = None, bg_path=None,
                    workers: int | None = None, overwrite: bool = False, image_format: str = ".png"):
    """Write an ``rgb/`` + ``gt/`` folder with every item of ``dataset`` and its augmented copies.

    For every item: the original under its own id and ``config.copies``
    copies under ``augmented_id(id, k)``, k = 1..copies; the subset lists of
    the dataset with each copy beside its source; ``overlays/<id>.jpg`` for
    people (never read for training). Labels keep the class list of the
    dataset; its ``ignore_index`` is written as ``segzoo.constants.IGNORE_INDEX``.

    Args:
        dataset: any object with the protocol of
            :class:`segzoo.data.folder.SegmentationFolder` (``class_names``,
            ``colors``, ``ignore_index``, ``ids``, ``load``, ``subsets``,
            ``image_path``); it must be picklable when ``workers > 1``.
        output_dir: the folder to write; it must be empty or absent. It is
            built beside, under a name starting with ``segzoo.files.PARTIAL_PREFIX``,
            and moved into place only when complete: an error or a kill leaves
            ``output_dir`` as it was.
        config: the augmentation (:class:`AugmentConfig`); default ``AugmentConfig()``.
        bg_path: folder of background images for the ``background`` operation;
            required when ``config.background_prob > 0``, refused otherwise.
        workers: worker processes; ``None`` uses every available core, 1 runs
            in this process. The output does not depend on it.
        overwrite: replace a non-empty folder: the new output takes the
            place of the whole folder once complete, so nothing of what it held
            survives.
        image_format: ``".png"`` (lossless) or ``".jpg"`` for the images;
            labels are always PNG.

    Returns:
        ``output_dir``.

    Raises:
        OutputExistsError: the output folder is a file, inside or around the
            source's folders or ``bg_path``, or not empty without ``overwrite``
            (nothing is written).
        DataError: ``bg_path`` missing or without images, ids that would
            collide, or bad items (named).
        ValueError: ``bg_path`` and ``config.background_prob`` disagree.
    """
    config = AugmentConfig() if config is None else config
    output_dir = os.fspath(output_dir)
    backgrounds = _list_backgrounds(bg_path, config)
    check_output_folder(output_dir, overwrite=overwrite, input_folders=_input_folders(dataset, bg_path))
    _check_output_ids(dataset, config.copies)
    subsets = {name: [out for item_id in ids for out in _with_copies(item_id, config.copies)]
               for name, ids in dataset.subsets().items()}
    item_ids = list(dataset.ids)
    workers = _available_cores() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1 or None, got {workers}.")
    chunk_size = max(1, min(8, math.ceil(len(item_ids) / (4 * workers))))
    chunks = [item_ids[i: i + chunk_size] for i in range(0, len(item_ids), chunk_size)]
    workers = min(workers, len(chunks))
    # The workers write into the staging folder too: the writer of the job is the staging one.
    with atomic_write(os.path.realpath(output_dir), folder=True) as staging:
        writer = FolderWriter(staging, dataset.class_names, dataset.colors, image_format=image_format)
        _write_items(_Job(dataset, writer, config, backgrounds), chunks, workers)
        if subsets:
            writer.write_subsets(subsets)
    return output_dir
