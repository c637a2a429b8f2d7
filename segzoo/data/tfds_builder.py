"""A TensorFlow Datasets builder for ``rgb/`` + ``gt/`` datasets (a folder, or a zip of one).

From Python, with the dataset name and data directory as arguments::

    from segzoo.data import build_dataset
    builder = build_dataset("path/to/folder_or.zip", name="holes", data_dir="~/tensorflow_datasets")
    builder.info.metadata["class_names"], builder.info.splits["validation"].num_examples
    dataset = builder.as_dataset(split="train")        # or segzoo.data.load("holes", data_dir=...)

From the command line, ``tfds build`` imports the dataset folder
:data:`CLI_BUILDER_DIR` (``segzoo/data/segzoo_dataset/``, which builds the
dataset ``segzoo_dataset``) and reads the source from ``--manual_dir``: the
``rgb/`` + ``gt/`` folder itself, or a folder holding exactly one zip of it
(such as the original project's ``full_semantic.zip``). The split is set by
the environment variables ``SEGZOO_VAL_RATIO`` and ``SEGZOO_SPLIT_SEED``;
segzoo must be importable (``pip install -e .`` or ``PYTHONPATH``)::

    SEGZOO_VAL_RATIO=0.1 SEGZOO_SPLIT_SEED=0 tfds build \\
        $(python -c "from segzoo.data import tfds_builder; print(tfds_builder.CLI_BUILDER_DIR)") \\
        --manual_dir path/to/folder --data_dir ~/tensorflow_datasets

The ``tfds`` launcher of tensorflow-datasets 4.9 imports apache-beam and
mlcroissant on start (tensorflow/datasets#5463): ``pip install -e ".[tfds-cli]"``
to use it, or build from Python, which needs neither.

Each example holds ``image`` (``uint8`` ``(H, W, 3)``: the source's PNG or JPEG
bytes as they are; other formats, and photos whose EXIF orientation TensorFlow
would ignore, as PNG pixels), ``label`` (``uint8`` ``(H, W, 1)`` class ids, PNG),
``id`` and ``source_id`` (text). ``builder.info.metadata`` holds
``class_names``, ``colors``, ``num_classes``, ``ignore_index`` and how the
splits were made (``split_method``, ``val_ratio``, ``seed``, ``excluded``: the
augmented copies of validation sources left out, ``source``, ``num_items``).
Splits ``train`` and ``validation`` follow :mod:`segzoo.data.splits`. Every item
is decoded and checked while building: a corrupt file, an image whose size
differs from its label or a label value that is no class id stops the build
with an error naming the file.

Rebuilding: TFDS never rewrites a prepared ``<data_dir>/<name>/<version>``; it
reuses it. :func:`build_dataset` reuses it only when it was made from the same
source, with the same number of items and split settings, and raises
otherwise; ``overwrite=True`` deletes that version first (``tfds build
--overwrite`` does the same). After editing the source, rebuild with
``overwrite=True`` or a new version.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
import types

from etils import epath
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import tqdm_utils
from tqdm.auto import tqdm

from segzoo.data.folder import source_id
from segzoo.data.io import DataError
from segzoo.data.sources import open_dataset
from segzoo.data.splits import DEFAULT_VAL_RATIO, split_ids

logger = logging.getLogger(__name__)

#: The folder that ``tfds build`` is pointed at (it builds the dataset ``segzoo_dataset``).
CLI_BUILDER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "segzoo_dataset")

DEFAULT_VERSION = "1.0.0"

_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")

# Largest mean absolute difference, in 0..255 levels, between TensorFlow's and
# OpenCV's decoding of one JPEG for its bytes to be stored as they are (the two
# libjpeg builds round differently, by a few levels at most). A larger one
# means that TensorFlow, which ignores EXIF orientation, would show the image
# rotated or flipped against its label: such images are stored as PNG pixels.
_JPEG_TOLERANCE = 3.0


def _features():
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
        "label": tfds.features.Image(shape=(None, None, 1), dtype=np.uint8,
                                     encoding_format="png", use_colormap=True),
        "id": tfds.features.Text(),
        "source_id": tfds.features.Text(),
    })


def _storable(encoded: bytes, pixels: np.ndarray):
    """``encoded`` when TensorFlow decodes it to ``pixels`` (``(H, W, C)``), else ``pixels``.

    TFDS decodes stored images with ``tf.image.decode_image``; what it returns
    must be what segzoo's OpenCV reader returned while checking the item.
    Formats other than PNG and JPEG (BMP, TIFF, WebP) and images whose EXIF
    orientation matters are stored as pixels, which TFDS encodes as PNG.
    """
    is_png, is_jpeg = encoded.startswith(b"\x89PNG"), encoded.startswith(b"\xff\xd8")
    if not (is_png or is_jpeg):
        return pixels
    try:
        decoded = tf.io.decode_image(encoded, channels=pixels.shape[-1], expand_animations=False).numpy()
    except tf.errors.InvalidArgumentError:
        return pixels
    if decoded.shape != pixels.shape:
        return pixels
    difference = np.abs(decoded.astype(np.int16) - pixels).mean()
    return encoded if difference <= (_JPEG_TOLERANCE if is_jpeg else 0.0) else pixels


class SegmentationFolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Builds a dataset from an ``rgb/`` + ``gt/`` folder or zip (see the module docstring).

    Not registered under a name itself: :func:`builder_class` makes a named
    subclass, and ``segzoo/data/segzoo_dataset`` holds the one ``tfds build`` uses.

    Args:
        source: the folder, the zip, or a folder holding one zip. ``None``
            reads the TFDS manual directory (``--manual_dir``).
        val_ratio: fraction of source images for validation when the source
            has no ``ImageSets/Segmentation`` lists.
        seed: seed of that split.
        **kwargs: ``tfds.core.GeneratorBasedBuilder`` arguments (``data_dir``, ``version``, ...).
    """

    VERSION = tfds.core.Version(DEFAULT_VERSION)
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the dataset in the manual directory (--manual_dir): either the rgb/ + gt/ folder "
        "itself (with classes.json), or a folder holding exactly one zip archive of it, such "
        "as full_semantic.zip, with rgb/, gt/ and classes.json at its root or under one top "
        "folder."
    )

    # TFDS 4.9.10 computes this with `importlib_resources`, which it only installs
    # on Python < 3.9 (tensorflow/datasets#11212); the file of the class is the answer.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """The file that defines this builder class."""
        return epath.Path(inspect.getfile(cls))

    def __init__(self, *, source=None, val_ratio=DEFAULT_VAL_RATIO, seed=0, **kwargs):
        self._source = None if source is None else os.path.abspath(os.fspath(source))
        self._val_ratio = float(val_ratio)
        self._seed = int(seed)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Images and class-id masks from an rgb/ + gt/ folder (segzoo).",
            features=_features(),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(),
        )

    def _source_path(self, dl_manager=None) -> str:
        if self._source is not None:
            return self._source
        return os.path.abspath(os.fspath(dl_manager.manual_dir))

    def _split_generators(self, dl_manager):
        with open_dataset(self._source_path(dl_manager), cvat=False) as reader:
            split = split_ids(reader.ids, reader.subsets(), self._val_ratio, self._seed, where=reader.root)
            self.info.metadata.update({
                "class_names": list(reader.class_names),
                "colors": [list(color) for color in reader.colors],
                "num_classes": reader.num_classes,
                "ignore_index": reader.ignore_index,
                "split_method": split.method,
                "val_ratio": self._val_ratio,
                "seed": self._seed,
                "excluded": list(split.excluded),
                "source": reader.root,
                "num_items": len(reader.ids),
            })
            path = reader.root
        if split.excluded:
            logger.info("%s: %d augmented copies of validation images left out of training (training on a copy "
                        "of a validation image would inflate the validation score).", path, len(split.excluded))
        return {name: self._generate_examples(path, ids, name)
                for name, ids in (("train", split.train), ("validation", split.validation), ("test", split.test))
                if ids}

    def _generate_examples(self, path, ids, split):
        with open_dataset(path, cvat=False) as reader:
            for item_id in tqdm(ids, desc=f"TFDS {self.name} {split}", unit="image"):
                encoded_image, encoded_label = reader.read_encoded(item_id)
                image, label = reader.decode(item_id, encoded_image, encoded_label)
                yield item_id, {
                    "image": _storable(encoded_image, image),
                    "label": _storable(encoded_label, label[..., None]),
                    "id": item_id,
                    "source_id": source_id(item_id),
                }

    def _log_download_bytes(self) -> None:
        # TFDS prints "Downloading and preparing dataset Unknown size ..." here; nothing is downloaded
        logger.debug("Building %s in %s.", self.name, self.data_dir)

    def _log_download_done(self) -> None:
        # TFDS prints "Dataset ... downloaded and prepared to ..." here; the caller says where the build is
        logger.debug("Built %s in %s.", self.name, self.data_dir)

    def check_reusable(self) -> None:
        """Raise :class:`DataError` if the prepared data was made from another source or split.

        Compares the source path, its number of items and, for a ratio split,
        ``val_ratio`` and ``seed`` with what the prepared version recorded.
        """
        recorded = self.info.metadata
        with open_dataset(self._source or recorded["source"], cvat=False) as reader:
            now = {"source": reader.root, "num_items": len(reader.ids)}
        if recorded.get("split_method") == "ratio":
            now.update(val_ratio=self._val_ratio, seed=self._seed)
        changed = {key: (recorded.get(key), value) for key, value in now.items() if recorded.get(key) != value}
        if changed:
            listed = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
            raise DataError(
                f"{self.data_path}: a build of '{self.name}' version {self.version} exists and "
                f"differs from this request ({listed}). Pass overwrite=True to rebuild it, or "
                f"choose another name or version."
            )


def builder_class(name: str, version: str = DEFAULT_VERSION) -> type[SegmentationFolderBuilder]:
    """A :class:`SegmentationFolderBuilder` subclass for the dataset ``name`` at ``version``.

    TFDS takes a dataset's name from its class; the class is made here with
    ``types.new_class`` and kept out of TFDS's global registry, so one process
    can build any number of names, and the same name twice.
    """
    if not _NAME_PATTERN.match(name):
        raise ValueError(
            f"Dataset name {name!r} is not valid: use lower-case letters, digits and '_', "
            f"starting with a letter (e.g. 'holes_v2')."
        )
    tfds.core.Version(version)  # raises on a malformed version

    def namespace(body):
        body.update(name=name, VERSION=tfds.core.Version(version), __module__=__name__,
                    __doc__=f"The segzoo dataset '{name}' (see segzoo.data.tfds_builder).")

    class_name = "".join(part.capitalize() for part in name.split("_"))
    return types.new_class(class_name, (SegmentationFolderBuilder,), {"skip_registration": True}, namespace)


def build_dataset(source, name="segzoo_dataset", data_dir=None, val_ratio=DEFAULT_VAL_RATIO, seed=0,
                  version=DEFAULT_VERSION, overwrite=False) -> SegmentationFolderBuilder:
    """Build (or reuse) the TFDS dataset ``name`` from an ``rgb/`` + ``gt/`` folder or zip.

    Args:
        source: the folder, a zip of it, or a folder holding exactly one such zip.
        name: dataset name (lower-case letters, digits, ``_``).
        data_dir: TFDS data directory; ``None`` means TFDS's default
            (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
        val_ratio: fraction of source images for validation when the source
            has no ``ImageSets/Segmentation`` lists (see :mod:`segzoo.data.splits`).
        seed: seed of that split.
        version: dataset version, ``"x.y.z"``.
        overwrite: delete a prepared ``<data_dir>/<name>/<version>`` first.

    Returns:
        The prepared builder: ``builder.as_dataset(split=...)``, ``builder.info``.

    Raises:
        DataError: for a bad source (naming the file), or when a prepared
            version exists that was made from another source or split settings
            and ``overwrite`` is false.
    """
    builder_cls = builder_class(name, version)

    def make():
        return builder_cls(source=source, val_ratio=val_ratio, seed=seed, data_dir=data_dir)

    builder = make()
    if builder.is_prepared():
        if overwrite:
            logger.info("Deleting the previous build %s.", builder.data_path)
            builder.data_path.rmtree()
            builder = make()
        else:
            builder.check_reusable()
            logger.info("Reusing the build in %s (pass overwrite=True to rebuild).", builder.data_path)
            return builder
    with _own_progress_bars():
        builder.download_and_prepare()
    return builder


@contextlib.contextmanager
def _own_progress_bars():
    """TFDS's own progress bars off (nested ones, named after temporary files): the builder shows one bar
    per split instead. The previous setting is restored."""
    shown = getattr(tqdm_utils, "_active", True)
    tfds.display_progress_bar(False)
    try:
        yield
    finally:
        tfds.display_progress_bar(shown)
