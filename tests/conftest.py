"""Test configuration: quiet TensorFlow logs, seeded randomness, tiny datasets made inside each test."""

import os
import pathlib
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from segzoo.data.folder import FolderWriter, augmented_id  # noqa: E402


def pytest_collection_modifyitems(items):
    """Modules that hold slow tests first, each in its own order: under ``-n 2`` the long tests start early,
    side by side, and the quick ones fill in at the end (instead of a long test running alone last)."""
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow_modules)


@pytest.fixture(autouse=True)
def _seed_everything():
    keras.utils.set_random_seed(0)
    yield


CLASS_NAMES = ("background", "hole", "crack")
CLASS_COLORS = ((0, 0, 0), (255, 0, 0), (0, 255, 0))


def coded_item(index, num_classes, size, rng):
    """An item whose image encodes its label: red = 20 + 100 * class id.

    The label is made of 8x8 blocks of random classes; green tells items apart;
    blue is a left-to-right ramp, so a flip shows even inside one block.
    """
    height, width = size
    blocks = rng.integers(0, num_classes, (height // 8, width // 8))
    label = np.kron(blocks, np.ones((8, 8), dtype=np.int64)).astype(np.uint8)
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = 20 + 100 * label
    image[..., 1] = (37 * index) % 200 + 20
    image[..., 2] = np.linspace(10, 250, width).astype(np.uint8)[None, :]
    return image, label


@pytest.fixture
def tiny_preset(monkeypatch):
    """The harness's ``tiny`` preset, registered for one test only (so preset lists stay the real ones)."""
    from harness import tiny_preset as make_preset
    from segzoo import presets

    monkeypatch.setitem(presets._PRESETS, "tiny", make_preset())
    return "tiny"


@pytest.fixture
def make_folder(tmp_path):
    """Factory writing an ``rgb/`` + ``gt/`` folder below ``tmp_path``; returns its path.

    ``num_sources`` originals ``img_000``... each with ``copies`` augmented copies
    (left-right mirrored, named ``<id>_aug001``...); ``subsets`` maps a subset
    name to source indices (copies follow their source).
    """
    def make(name="data", num_sources=6, copies=1, num_classes=3, size=(64, 96), subsets=None,
             image_format=".png", seed=0):
        rng = np.random.default_rng(seed)
        writer = FolderWriter(tmp_path / name, CLASS_NAMES[:num_classes], CLASS_COLORS[:num_classes],
                              image_format=image_format)
        for index in range(num_sources):
            image, label = coded_item(index, num_classes, size, rng)
            writer.write(f"img_{index:03d}", image, label)
            for copy in range(1, copies + 1):
                writer.write(augmented_id(f"img_{index:03d}", copy), image[:, ::-1].copy(), label[:, ::-1].copy())
        if subsets:
            writer.write_subsets({
                subset: [i for i in sorted(writer.written) if int(i[4:7]) in indices]
                for subset, indices in subsets.items()})
        return tmp_path / name

    return make


@pytest.fixture
def zip_folder():
    """Factory zipping every file below ``folder`` into ``archive``; returns ``archive``.

    As CVAT zips an export: no folder entries, members at the root of the
    archive, or below ``top`` (``"my_task/"``) for an archive zipped with its folder.
    """
    def make(folder, archive, top=""):
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(pathlib.Path(folder).rglob("*")):
                if path.is_file():
                    z.write(path, top + path.relative_to(folder).as_posix())
        return archive

    return make
