"""Write class maps as a CVAT "Segmentation mask 1.1" zip: pre-annotations that CVAT imports onto a task.

The zip has the layout CVAT exports and imports (see :mod:`segzoo.data.cvat`),
members at its root and no folder entries::

    labelmap.txt                         "name:R,G,B::" per class, background (0,0,0) first
    ImageSets/Segmentation/default.txt   every id
    SegmentationClass/<id>.png           RGB class colours
    SegmentationObject/<id>.png          instances (connected regions of each class), VOC palette

``<id>`` is the path of the source image relative to its folder, without the
extension (``batch_1/img_0001``): CVAT matches it to the task's frame of that
name, so the zip imports onto the task that holds the images ("Upload
annotations", format "Segmentation mask 1.1"). As in CVAT's own exports, an
image predicted all background gets no mask PNG but is listed. Class 0 is
written in black, the colour CVAT's importer expects for unannotated pixels.
"""

from __future__ import annotations

import os
import uuid
import zipfile

import cv2
import numpy as np

from segzoo.constants import BACKGROUND_ID
from segzoo.data.cvat import LABELMAP_FILE, MASKS_DIR
from segzoo.data.folder import SUBSETS_DIR, validate_classes
from segzoo.data.io import DataError
from segzoo.data.overlay import voc_palette

OBJECTS_DIR = "SegmentationObject/"
#: Instances one mask can hold: CVAT's importer reads instance colours from the 256-colour VOC palette.
MAX_INSTANCES = 255
_DATE = (1980, 1, 1, 0, 0, 0)  # a fixed member date: the same predictions give the same bytes


def labelmap_text(class_names, colors) -> str:
    """The ``labelmap.txt`` of ``class_names`` / ``colors`` (class id order), with CVAT's header line."""
    lines = "".join(f"{name}:{','.join(str(int(c)) for c in color)}::\n" for name, color in zip(class_names, colors))
    return "# label:color_rgb:parts:actions\n" + lines


def instance_mask(classes, max_instances=MAX_INSTANCES) -> np.ndarray:
    """Instance ids ``uint8 (H, W)`` of class ids ``(H, W)``: each 8-connected region of a class is one instance.

    Background (0) is instance 0; instances are numbered 1.. by class, then by
    position. Beyond ``max_instances`` regions, the smallest regions of a class
    join its largest one (an instance may then have several parts), so that
    every labelled pixel keeps its class through CVAT's importer.
    """
    classes = np.asarray(classes)
    regions = []  # (area, class id, boolean mask)
    for class_id in np.unique(classes):
        if class_id == BACKGROUND_ID:
            continue
        count, components, stats, _ = cv2.connectedComponentsWithStats((classes == class_id).astype(np.uint8),
                                                                       connectivity=8)
        regions += [(int(stats[k, cv2.CC_STAT_AREA]), int(class_id), components == k) for k in range(1, count)]
    kept = sorted(range(len(regions)), key=lambda i: -regions[i][0])[:max_instances]
    largest_of_class = {}
    for i in kept:
        largest_of_class.setdefault(regions[i][1], i)
    number = {i: n for n, i in enumerate(sorted(kept), start=1)}  # class, then position order
    instances = np.zeros(classes.shape, np.uint8)
    for i, (_, class_id, mask) in enumerate(regions):
        instances[mask] = number[i] if i in number else number[largest_of_class[class_id]]
    return instances


def _png(rgb) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError(f"OpenCV could not encode a mask of shape {np.shape(rgb)} as PNG.")
    return buffer.tobytes()


class CvatWriter:
    """Writes class maps into a CVAT "Segmentation mask 1.1" zip (see the module docstring).

    The zip is built beside ``path`` and moved into place by :meth:`close` (or
    the end of a ``with`` block without an error), so a failure leaves no
    half-written zip.

    Args:
        path: the ``.zip`` to write.
        class_names: names of the predicted classes, class id order, background first.
        colors: ``(r, g, b)`` per class; class 0 is written as ``(0, 0, 0)``.
        overwrite: replace an existing ``path``.

    Raises:
        DataError: ``path`` exists (without ``overwrite``), or the classes are
            not usable (a name twice, two classes of one colour, a
            non-background class coloured black).
    """

    def __init__(self, path, class_names, colors, overwrite=False):
        from segzoo.errors import OutputExistsError, switch

        self.path = os.path.abspath(os.fspath(path))
        if os.path.exists(self.path) and not overwrite:
            raise OutputExistsError(f"{self.path}: already exists. Choose another name or pass {switch('overwrite')}.")
        self.class_names = list(class_names)
        self.colors = [(0, 0, 0)] + [tuple(int(c) for c in color) for color in colors[1:]]
        validate_classes(self.class_names, self.colors, f"{self.path}: the model's classes")
        self._palette = np.array(self.colors, np.uint8)
        self._instance_palette = voc_palette(MAX_INSTANCES + 1)
        self.ids: list[str] = []
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._partial = os.path.join(os.path.dirname(self.path),
                                     f".{os.path.basename(self.path)}.partial-{uuid.uuid4().hex[:12]}")
        self._zip = zipfile.ZipFile(self._partial, "w", zipfile.ZIP_DEFLATED)

    def _add(self, name, data: bytes):
        info = zipfile.ZipInfo(name, date_time=_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        self._zip.writestr(info, data)

    def write(self, item_id: str, classes) -> None:
        """Add the class ids ``(H, W)`` of the image ``item_id`` (its relative path without extension)."""
        item_id = item_id.replace(os.sep, "/")
        if item_id in self.ids:
            raise DataError(f"{self.path}: the id '{item_id}' was written twice.")
        classes = np.asarray(classes)
        if classes.ndim != 2 or (classes.size and int(classes.max()) >= len(self.class_names)):
            raise DataError(f"{self.path}: the class map of '{item_id}' (shape {classes.shape}) holds ids beyond "
                            f"the {len(self.class_names)} classes {self.class_names}.")
        self.ids.append(item_id)
        if (classes == BACKGROUND_ID).all():
            return  # as CVAT: no annotation, no mask, still listed
        self._add(f"{MASKS_DIR}{item_id}.png", _png(self._palette[classes]))
        self._add(f"{OBJECTS_DIR}{item_id}.png", _png(self._instance_palette[instance_mask(classes)]))

    def close(self) -> str:
        """Write the label map and the id list, and move the zip into place; returns its path."""
        if self._zip is None:
            return self.path
        self._add(LABELMAP_FILE, labelmap_text(self.class_names, self.colors).encode("utf-8"))
        self._add(f"{SUBSETS_DIR}/default.txt", "".join(i + "\n" for i in self.ids).encode("utf-8"))
        self._zip.close()
        self._zip = None
        os.replace(self._partial, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the zip being written."""
        if self._zip is not None:
            self._zip.close()
            self._zip = None
            os.remove(self._partial)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc_info):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_cvat_zip(path, predictions, class_names, colors, overwrite=False) -> str:
    """Write ``predictions`` (``(id, class ids (H, W))`` pairs) as a CVAT zip with :class:`CvatWriter`; returns the path."""
    with CvatWriter(path, class_names, colors, overwrite=overwrite) as writer:
        for item_id, classes in predictions:
            writer.write(item_id, classes)
    return writer.path
