"""Synthetic sample data: holes and cracks on textured surfaces, as a CVAT export.

:func:`make_cvat_sample` writes what a user of the original project had: a
CVAT "Segmentation mask 1.1" export of defect images, a folder of plain
surfaces (for background replacement) and a short video of frames that are not
in the export. Surfaces (brushed metal, wood, concrete) are drawn with numpy
and OpenCV under varied light, blur and noise; defects are dark, shaded, of
irregular shape. Everything is deterministic per ``seed`` and takes about a
second at the default size.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import zipfile

import cv2
import numpy as np

from segzoo.data.io import DataError
from segzoo.data.overlay import voc_palette

#: CVAT labels of the sample, with their colours; CVAT adds ``background``.
LABEL_COLORS = {"background": (0, 0, 0), "hole": (250, 50, 83), "crack": (51, 221, 255)}
DEFECTS = ("hole", "crack")
SURFACES = ("metal", "wood", "concrete")
_LABELMAP_HEADER = "# label:color_rgb:parts:actions\n"


@dataclasses.dataclass(frozen=True)
class CvatSample:
    """Paths and contents of a sample written by :func:`make_cvat_sample`.

    Attributes:
        export: the export folder, or the ``.zip`` when ``zip=True``.
        images: folder of the original images when ``save_images=False``
            (pass it as ``read_cvat(export, images=...)``), else ``None``.
        backgrounds: folder of plain surfaces without defects (JPEG).
        video: the ``.mp4`` video, of frames that are not in the export
            (``None`` when ``video_frames=0``).
        ids: ids of the exported images, sorted.
        unlabelled_ids: ids listed in the export with no mask (no defect).
    """

    export: str
    images: str | None
    backgrounds: str
    video: str | None
    ids: tuple[str, ...]
    unlabelled_ids: tuple[str, ...]


def make_cvat_sample(output_dir, num_images=24, image_size=(240, 320), seed=0, save_images=True,
                     zip=False, num_backgrounds=4, video_frames=40, empty_fraction=0.2,
                     video_fps=10, overwrite=False) -> CvatSample:
    """Write a small synthetic CVAT "Segmentation mask 1.1" export and its companions.

    Layout below ``output_dir``::

        cvat_export/ (or cvat_export.zip)   labelmap.txt, ImageSets/Segmentation/default.txt,
                                            SegmentationClass/, SegmentationObject/, JPEGImages/
        images/                             the originals, only when save_images=False
        backgrounds/bg_<k>.jpg              surfaces without defects
        video.mp4                           a camera panning over a defective surface

    As in CVAT, an image without defects gets no mask PNG but is listed in
    ``default.txt``. Labels: ``background`` (0,0,0), ``hole``, ``crack``.

    Args:
        output_dir: folder to write into (created when missing).
        num_images: number of images in the export.
        image_size: ``(height, width)`` in pixels of every image and video frame.
        seed: the same seed writes the same export, byte for byte.
        save_images: include ``JPEGImages/`` ("Save images" in CVAT); when
            ``False`` the originals go to ``images/`` instead.
        zip: write the export as ``cvat_export.zip``, as CVAT downloads it.
        num_backgrounds: number of plain surfaces.
        video_frames: number of video frames (0: no video).
        empty_fraction: fraction of images without any defect.
        video_fps: frame rate of the video.
        overwrite: replace the outputs of an earlier call; otherwise an
            existing output raises :class:`DataError`.
    """
    if num_images < 1 or not 0 <= empty_fraction <= 1:
        raise ValueError(f"need num_images >= 1 and 0 <= empty_fraction <= 1, got {num_images} and {empty_fraction}.")
    height, width = image_size
    output_dir = os.fspath(output_dir)
    paths = {
        "export": os.path.join(output_dir, "cvat_export.zip" if zip else "cvat_export"),
        "images": None if save_images else os.path.join(output_dir, "images"),
        "backgrounds": os.path.join(output_dir, "backgrounds"),
        "video": os.path.join(output_dir, "video.mp4"),
    }
    _clear_outputs([p for p in paths.values() if p], overwrite)
    export_rng, background_rng, video_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))

    ids = [f"surface_{i:04d}" for i in range(num_images)]
    num_empty = int(round(num_images * empty_fraction))
    empty = {ids[i] for i in export_rng.choice(num_images, size=num_empty, replace=False)}
    members, originals = {"labelmap.txt": _labelmap_text().encode()}, {}
    members["ImageSets/Segmentation/default.txt"] = "".join(i + "\n" for i in ids).encode()
    for index, item_id in enumerate(ids):
        num_defects = 0 if item_id in empty else int(export_rng.integers(1, 5))
        image, classes, instances = _render(export_rng, (height, width), num_defects, first=DEFECTS[index % 2])
        originals[item_id + ".jpg"] = _encode(_finish(export_rng, image), ".jpg")
        if num_defects:
            members[f"SegmentationClass/{item_id}.png"] = _encode(_class_colors()[classes], ".png")
            members[f"SegmentationObject/{item_id}.png"] = _encode(voc_palette(256)[instances], ".png")
    if save_images:
        members.update({"JPEGImages/" + name: data for name, data in originals.items()})
    else:
        _write_files(paths["images"], originals)
    (_write_zip if zip else _write_files)(paths["export"], members)

    _write_files(paths["backgrounds"], {
        f"bg_{k:03d}.jpg": _encode(_finish(background_rng, _render(background_rng, (height, width), 0)[0]), ".jpg")
        for k in range(num_backgrounds)})
    if video_frames:
        _write_video(paths["video"], video_rng, (height, width), video_frames, video_fps)
    return CvatSample(export=paths["export"], images=paths["images"], backgrounds=paths["backgrounds"],
                      video=paths["video"] if video_frames else None, ids=tuple(ids),
                      unlabelled_ids=tuple(sorted(empty)))


# -- the export --------------------------------------------------------------

def _labelmap_text() -> str:
    # CVAT sorts the lines with Python's sorted() (case-sensitive).
    return _LABELMAP_HEADER + "".join(
        f"{name}:{','.join(map(str, LABEL_COLORS[name]))}::\n" for name in sorted(LABEL_COLORS))


def _class_colors() -> np.ndarray:
    """``(1 + len(DEFECTS), 3)`` uint8: the colour of background, then of each defect."""
    return np.array([LABEL_COLORS["background"]] + [LABEL_COLORS[d] for d in DEFECTS], dtype=np.uint8)


def _encode(array: np.ndarray, ext: str) -> bytes:
    """Encode an RGB (or single-channel) uint8 array; JPEG at quality 92 like a camera."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if ext == ".jpg" else []
    ok, buffer = cv2.imencode(ext, array, params)
    if not ok:
        raise DataError(f"OpenCV could not encode an array of shape {array.shape} as {ext}.")
    return buffer.tobytes()


def _clear_outputs(paths, overwrite):
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not overwrite:
        raise DataError(f"{', '.join(existing)}: already exist(s). Choose another folder or pass overwrite=True.")
    for path in existing:
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def _write_files(root, files: dict[str, bytes]):
    for name, data in files.items():
        path = os.path.join(root, *name.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def _write_zip(path, files: dict[str, bytes]):
    # Members at the root, no directory entries, a fixed date: as CVAT, and reproducible.
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def _write_video(path, rng, size, num_frames, fps):
    """A camera panning across a wide defective surface, with fresh sensor noise per frame."""
    height, width = size
    pan = width // 2
    canvas = _render(rng, (height, width + pan), int(rng.integers(3, 7)))[0]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise DataError(f"{path}: OpenCV cannot write an mp4v video here (no FFmpeg backend?).")
    try:
        for index in range(num_frames):
            x = int(round(index * pan / max(num_frames - 1, 1)))
            frame = _finish(rng, canvas[:, x:x + width])
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


# -- rendering ---------------------------------------------------------------

def _render(rng, size, num_defects, first="hole"):
    """Draw a surface with ``num_defects`` defects, the first of kind ``first``.

    Returns:
        ``(image float32 (H, W, 3) 0..255 before blur and noise, class index
        uint8 (H, W) into ("background",) + DEFECTS, instance index uint8
        (H, W) 1-based in drawing order)``; later defects cover earlier ones.
    """
    scale = min(size) / 240.0
    image = _SURFACE_MAKERS[rng.choice(SURFACES)](rng, size, scale)
    light_angle = rng.uniform(0, 2 * np.pi)
    classes = np.zeros(size, dtype=np.uint8)
    instances = np.zeros(size, dtype=np.uint8)
    for index in range(num_defects):
        kind = first if index == 0 else DEFECTS[int(rng.integers(len(DEFECTS)))]
        mask = (_hole_mask if kind == "hole" else _crack_mask)(rng, size, scale)
        image *= _defect_shading(rng, mask, light_angle, scale)[..., None]
        classes[mask] = 1 + DEFECTS.index(kind)
        instances[mask] = index + 1
    return image * _lighting(rng, size, light_angle)[..., None], classes, instances


def _finish(rng, image) -> np.ndarray:
    """Camera effects on a float image: sometimes defocus, always sensor noise; to uint8."""
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.2))
    image = image + rng.normal(0.0, rng.uniform(1.5, 5.0), image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _smooth_noise(rng, size, cell) -> np.ndarray:
    """Noise of features about ``cell`` pixels wide, float32 (H, W), standard deviation ~1."""
    height, width = size
    cell = max(cell, 1.0)
    grid = rng.standard_normal((int(height / cell) + 3, int(width / cell) + 3)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _streaks(rng, size, angle, length) -> np.ndarray:
    """White noise smeared along ``angle``: grain of brushed metal or wood fibres, std ~1."""
    length = max(int(length) | 1, 3)
    kernel = np.zeros((length, length), dtype=np.float32)
    centre, dx, dy = length // 2, np.cos(angle) * length / 2, np.sin(angle) * length / 2
    cv2.line(kernel, (int(centre - dx), int(centre - dy)), (int(centre + dx), int(centre + dy)), 1.0, 1)
    noise = cv2.filter2D(rng.standard_normal(size).astype(np.float32), -1, kernel / kernel.sum())
    return noise / (noise.std() + 1e-6)


def _metal(rng, size, scale):
    angle = rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.1)
    gray = rng.uniform(105, 175) * (1 + 0.05 * _streaks(rng, size, angle, 31 * scale)
                                    + 0.04 * _smooth_noise(rng, size, 40 * scale))
    scratches = np.zeros(size, dtype=np.float32)
    height, width = size
    for _ in range(int(rng.integers(4, 14))):
        start = rng.uniform((0, 0), (width, height))
        end = start + rng.normal(0, 60 * scale, 2)
        cv2.line(scratches, tuple(map(int, start)), tuple(map(int, end)), float(rng.uniform(-0.08, 0.2)), 1)
    gray *= 1 + cv2.GaussianBlur(scratches, (3, 3), 0)
    return gray[..., None] * rng.uniform((0.95, 0.97, 1.0), (0.99, 1.01, 1.07)).astype(np.float32)


def _wood(rng, size, scale):
    height, width = size
    angle = rng.uniform(0, np.pi)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    across = x * np.cos(angle) + y * np.sin(angle)
    across += _smooth_noise(rng, size, 110 * scale) * rng.uniform(6, 14) * scale
    rings = (0.5 + 0.5 * np.sin(2 * np.pi * across / (rng.uniform(14, 30) * scale))) ** 3
    fibres = _streaks(rng, size, angle + np.pi / 2, 41 * scale)
    shade = 0.8 + 0.13 * (1 - rings) + 0.05 * fibres
    brown = np.array([175, 122, 78], dtype=np.float32) * rng.uniform(0.75, 1.15) + rng.normal(0, 8, 3)
    return shade[..., None] * brown.astype(np.float32)


def _concrete(rng, size, scale):
    texture = (0.5 * _smooth_noise(rng, size, 48 * scale) + 0.3 * _smooth_noise(rng, size, 12 * scale)
               + 0.2 * _smooth_noise(rng, size, 3))
    gray = rng.uniform(110, 180) * (1 + 0.07 * texture) + rng.normal(0, 5, size).astype(np.float32)
    height, width = size
    for _ in range(int(height * width / 1500)):  # shallow pores: small and only slightly dark
        centre = tuple(int(v) for v in rng.uniform((0, 0), (width, height)))
        cv2.circle(gray, centre, int(rng.integers(1, 3)), float(gray[centre[1], centre[0]] * 0.82), -1)
    return gray[..., None] * rng.uniform((1.0, 0.98, 0.93), (1.04, 1.0, 0.98)).astype(np.float32)


_SURFACE_MAKERS = {"metal": _metal, "wood": _wood, "concrete": _concrete}


def _lighting(rng, size, angle) -> np.ndarray:
    """Exposure x a linear gradient along ``angle`` x a vignette, float32 (H, W)."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    along = ((x / width - 0.5) * np.cos(angle) + (y / height - 0.5) * np.sin(angle))
    radius2 = ((x / width - 0.5) ** 2 + (y / height - 0.5) ** 2) * 2
    return (rng.uniform(0.75, 1.15) * (1 + rng.uniform(0.2, 0.7) * along)
            * (1 - rng.uniform(0.0, 0.35) * radius2))


def _hole_mask(rng, size, scale) -> np.ndarray:
    """An irregular round blob, bool (H, W)."""
    height, width = size
    radius = rng.uniform(9, 26) * scale
    centre = rng.uniform((radius, radius), (width - radius, height - radius))
    theta = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    wobble = sum(rng.uniform(0, 0.12) * np.sin(k * theta + rng.uniform(0, 2 * np.pi)) for k in range(2, 6))
    aspect, tilt = rng.uniform(0.6, 1.0), rng.uniform(0, np.pi)
    r = radius * (1 + wobble)
    px, py = r * np.cos(theta), r * aspect * np.sin(theta)
    points = np.stack([centre[0] + px * np.cos(tilt) - py * np.sin(tilt),
                       centre[1] + px * np.sin(tilt) + py * np.cos(tilt)], axis=1)
    mask = np.zeros(size, dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask.astype(bool)


def _crack_mask(rng, size, scale) -> np.ndarray:
    """A jagged crack: a random walk of thick segments with a branch, bool (H, W)."""
    height, width = size
    mask = np.zeros(size, dtype=np.float32)
    trunk = _walk(rng, rng.uniform((0.15 * width, 0.15 * height), (0.85 * width, 0.85 * height)),
                  rng.uniform(0, 2 * np.pi), int(rng.integers(6, 14)), scale)
    walks = [(trunk, rng.uniform(4, 8) * scale)]
    if rng.random() < 0.5:
        start = trunk[int(rng.integers(1, len(trunk)))]
        walks.append((_walk(rng, start, rng.uniform(0, 2 * np.pi), int(rng.integers(3, 7)), scale),
                      rng.uniform(3, 5) * scale))
    for points, width_px in walks:
        for p, q in zip(points[:-1], points[1:]):
            thickness = max(2, int(round(width_px * rng.uniform(0.7, 1.2))))
            cv2.line(mask, tuple(map(int, p)), tuple(map(int, q)), 1.0, thickness)
    soft = cv2.GaussianBlur(mask, (0, 0), 1.0)
    return soft + 0.25 * _smooth_noise(rng, size, 3) * (soft > 0.05) > 0.5  # jagged edges


def _walk(rng, start, angle, steps, scale) -> np.ndarray:
    points = [np.asarray(start, dtype=np.float64)]
    for _ in range(steps):
        angle += rng.normal(0, 0.35)
        points.append(points[-1] + rng.uniform(7, 14) * scale * np.array([np.cos(angle), np.sin(angle)]))
    return np.array(points)


def _defect_shading(rng, mask, light_angle, scale) -> np.ndarray:
    """Brightness factor (H, W): 1 outside ``mask``; inside, darker with depth, the wall facing the light lit."""
    inside = mask.astype(np.uint8)
    depth = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    depth /= max(float(depth.max()), 1.0)
    shift = 3 * scale * np.array([np.cos(light_angle), np.sin(light_angle)])
    moved = cv2.warpAffine(inside, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), inside.shape[::-1])
    wall = mask & ~moved.astype(bool)
    edge = rng.uniform(0.3, 0.42)
    factor = np.where(mask, edge - 0.2 * depth + 0.2 * wall, 1.0).astype(np.float32)
    return factor
