"""Nothing lost, nothing silently wrong: each case a hostile or careless user found, refused or explained.

Outputs are written atomically and never over an input or an existing file
without --overwrite; resumes check what they resume from; labels that cannot be
right fail before training; untrusted files are bounded; messages name the file.
"""

import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile

import cv2
import keras
import numpy as np
import pytest

from harness import REPO_ROOT, TESTS_DIR, TINY_CLI
from segzoo import cli, files, training
from segzoo.checkpoints import torch_file
from segzoo.checkpoints.torch_file import CheckpointError, load_torch_checkpoint
from segzoo.data import io
from segzoo.data.cvat import parse_labelmap
from segzoo.data.folder import CLASSES_FILE, FolderWriter, SegmentationFolder, SegmentationZip
from segzoo.data.io import DataError
from segzoo.data.datasource import scan_labels
from segzoo.data.sources import prepare_source
from segzoo.errors import ConfigError, OutputNotWritableError
from segzoo.models import load_model
from segzoo.training import TrainConfig, train


def segzoo(argv, capsys):
    """Run the ``segzoo`` command: ``(status, stderr)``."""
    status = cli.main(argv)
    return status, capsys.readouterr().err


def write_folder(root, labels, class_names=("background", "hole"), image=None):
    """An rgb/ + gt/ folder with one item per label (uint8 arrays), images from ``image`` or grey."""
    FolderWriter(root, class_names, [(0, 0, 0), (255, 0, 0), (0, 255, 0)][:len(class_names)])
    for index, label in enumerate(labels):
        picture = image if image is not None else np.full((*label.shape, 3), 60 + 20 * index, np.uint8)
        os.makedirs(os.path.join(root, "rgb"), exist_ok=True)
        os.makedirs(os.path.join(root, "gt"), exist_ok=True)
        io.write_image(os.path.join(root, "rgb", f"img_{index}.png"), picture)
        cv2.imwrite(os.path.join(root, "gt", f"img_{index}.png"), label)  # any value, unchecked
    return root


def blocks(size=(32, 48), values=(0, 1), seed=0):
    """A label of 8x8 blocks drawn from ``values``."""
    rng = np.random.default_rng(seed)
    grid = rng.choice(np.asarray(values, np.uint8), (size[0] // 8, size[1] // 8))
    grid.flat[: len(values)] = values  # every value appears
    return np.kron(grid, np.ones((8, 8), np.uint8)).astype(np.uint8)


def write_cvat(root, color):
    """A one-image CVAT export whose mask paints the left half with the label 'hole' in ``color``."""
    os.makedirs(root / "SegmentationClass", exist_ok=True)
    os.makedirs(root / "JPEGImages", exist_ok=True)
    os.makedirs(root / "ImageSets" / "Segmentation", exist_ok=True)
    (root / "labelmap.txt").write_text(f"background:0,0,0::\nhole:{','.join(map(str, color))}::\n")
    mask = np.zeros((32, 48, 3), np.uint8)
    mask[:, :24] = color
    io.write_image(root / "SegmentationClass" / "a.png", mask)
    io.write_image(root / "JPEGImages" / "a.png", np.full((32, 48, 3), 90, np.uint8))
    (root / "ImageSets" / "Segmentation" / "default.txt").write_text("a\n")
    return root


# --- outputs: never over an input, never over an existing file without --overwrite ----------------

def test_predict_video_refuses_to_write_over_its_input_video(tmp_path, capsys):
    video = tmp_path / "in.webm"
    video.write_bytes(b"the source video")
    status, err = segzoo(["predict-video", "--checkpoint", str(tmp_path / "m.keras"), "--video", str(video),
                          "--output", str(video), "--overwrite"], capsys)
    assert status == 2 and "input" in err and "--output" in err
    assert video.read_bytes() == b"the source video"


@pytest.mark.parametrize("command", [
    ["predict-video", "--video", "{tmp}/in.webm"],
    ["convert", "{tmp}/official.pth", "--preset", "ddrnet23_slim"],
])
def test_an_existing_output_is_refused_without_overwrite(command, tmp_path, capsys):
    (tmp_path / "in.webm").write_bytes(b"video")
    output = tmp_path / ("out.webm" if command[0] == "predict-video" else "out.weights.h5")
    output.write_bytes(b"keep me")
    argv = [part.format(tmp=tmp_path) for part in command] + ["--output", str(output)]
    if command[0] == "predict-video":
        argv += ["--checkpoint", str(tmp_path / "m.keras")]
    status, err = segzoo(argv, capsys)
    assert status == 2 and "--overwrite" in err and "exists" in err
    assert output.read_bytes() == b"keep me"


def test_eval_checks_its_output_folder_before_any_work(tmp_path, capsys):
    used = tmp_path / "eval"
    used.mkdir()
    (used / "metrics.json").write_text("{}")
    argv = ["eval", "--checkpoint", str(tmp_path / "none.keras"), "--data", str(tmp_path)]
    status, err = segzoo(argv + ["--output", str(used)], capsys)
    assert status == 2 and "not empty" in err and "--overwrite" in err
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    status, err = segzoo(argv + ["--output", str(blocker / "eval")], capsys)  # cannot create a folder in a file
    assert status == 2 and "cannot write there" in err and str(blocker) in err
    with pytest.raises(OutputNotWritableError):
        files.check_writable(blocker / "eval")


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "state.json"
    files.write_json(target, {"epochs_done": 1})
    with pytest.raises(RuntimeError):
        with files.atomic_write(target) as temporary:
            with open(temporary, "w") as f:
                f.write('{"epochs_do')
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"epochs_done": 1}
    assert os.listdir(tmp_path) == ["state.json"]
    with files.atomic_write(tmp_path / "folder", folder=True) as temporary:
        os.makedirs(temporary)
        open(os.path.join(temporary, "a"), "w").close()
    assert os.listdir(tmp_path / "folder") == ["a"]


def test_a_reused_import_folder_is_checked_against_its_export(tmp_path, caplog):
    """An eval or train --output used before for another export re-imports instead of reusing the old import."""
    first, second = write_cvat(tmp_path / "first", (255, 0, 0)), write_cvat(tmp_path / "second", (0, 0, 255))
    (second / "labelmap.txt").write_text("background:0,0,0::\ncrack:0,0,255::\n")
    import_dir = tmp_path / "eval" / "dataset"
    prepare_source(first, import_dir=import_dir)
    assert json.loads((import_dir / CLASSES_FILE).read_text())["class_names"] == ["background", "hole"]
    with caplog.at_level(logging.INFO, "segzoo"):
        prepare_source(first, import_dir=import_dir)
    assert "already in" in caplog.text
    prepare_source(second, import_dir=import_dir)
    assert json.loads((import_dir / CLASSES_FILE).read_text())["class_names"] == ["background", "crack"]


# --- labels that cannot be right, caught before training --------------------------------------------

def test_binary_masks_stored_as_0_255_are_caught_and_the_fix_works(tmp_path):
    folder = write_folder(tmp_path / "data", [blocks(values=(0, 255), seed=i) for i in range(4)])
    with pytest.raises(DataError, match=r"0/255.*label_values=\(0, 255\)|label_values.*0 255"):
        scan_labels(str(folder), val_ratio=0.25)
    totals = scan_labels(str(folder), val_ratio=0.25, label_values=(0, 255))
    assert totals["train"][1] > 0 and totals["train"][255] == 0
    _, label = SegmentationFolder(folder, label_values=(0, 255)).load("img_0")
    assert set(np.unique(label)) == {0, 1}


def test_a_split_whose_every_pixel_is_ignored_fails(tmp_path):
    labels = [blocks(seed=i) for i in range(3)] + [np.full((32, 48), 255, np.uint8)]
    folder = write_folder(tmp_path / "data", labels)
    with open(folder / "ImageSets" / "Segmentation" / "train.txt", "w") if os.makedirs(
            folder / "ImageSets" / "Segmentation") is None else None as f:
        f.write("img_0\nimg_1\nimg_2\n")
    (folder / "ImageSets" / "Segmentation" / "val.txt").write_text("img_3\n")
    with pytest.raises(DataError, match="validation split, every pixel .* is 255"):
        scan_labels(str(folder))


def test_label_values_beyond_the_classes_fail_before_the_first_step(tmp_path):
    labels = [blocks(seed=i) for i in range(4)]
    labels[2][:8, :8] = 7
    folder = write_folder(tmp_path / "data", labels)
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"img_2\.png \(value 7: 64 pixels\)"):
        train(TrainConfig(data=str(folder), image_size=(32, 48), batch_size=2, epochs=1, weights="none",
                          checkpoint_dir=str(tmp_path / "run"), progress=0, val_ratio=0.25))
    assert time.perf_counter() - start < 30
    assert not os.path.exists(tmp_path / "run" / "last.keras")


def test_a_class_that_never_appears_warns_and_a_single_class_fails(tmp_path, caplog):
    folder = write_folder(tmp_path / "data", [blocks(seed=i) for i in range(4)],
                          class_names=("background", "hole", "crack"))
    with caplog.at_level(logging.WARNING, "segzoo"):
        scan_labels(str(folder), val_ratio=0.25)
    assert "'crack' never appear in the train split" in caplog.text
    single = write_folder(tmp_path / "single", [np.zeros((32, 48), np.uint8)] * 2, class_names=("background",))
    with pytest.raises(DataError, match="single class"):
        scan_labels(str(single))


def test_a_built_tfds_dataset_is_scanned_too(tmp_path, caplog):
    from segzoo.data.tfds_builder import build_dataset

    labels = [blocks(seed=i) for i in range(3)] + [np.full((32, 48), 255, np.uint8)]
    folder = write_folder(tmp_path / "data", labels, class_names=("background", "hole", "crack"))
    os.makedirs(folder / "ImageSets" / "Segmentation")
    (folder / "ImageSets" / "Segmentation" / "train.txt").write_text("img_0\nimg_1\nimg_2\n")
    (folder / "ImageSets" / "Segmentation" / "val.txt").write_text("img_3\n")
    build_dataset(folder, name="all_ignored", data_dir=tmp_path / "tfds")
    with pytest.raises(DataError, match=r"validation split, every pixel .* is 255.*all_ignored:validation id img_3"):
        scan_labels("all_ignored", data_dir=tmp_path / "tfds")
    no_crack = write_folder(tmp_path / "no_crack", [blocks(seed=i) for i in range(4)],
                            class_names=("background", "hole", "crack"))
    build_dataset(no_crack, name="no_crack", data_dir=tmp_path / "tfds", val_ratio=0.25)
    with caplog.at_level(logging.WARNING, "segzoo"):
        totals = scan_labels("no_crack", data_dir=tmp_path / "tfds")
    assert "'crack' never appear in the train split (3 labels)" in caplog.text
    assert totals["train"][:2].sum() == 3 * 32 * 48 and totals["validation"][:2].sum() == 32 * 48


def exif_jpeg(image, orientation):
    """JPEG bytes of ``image`` (RGB) with an EXIF APP1 segment holding ``orientation``."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    tiff = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1,
                                                                               orientation, 0) + b"\0\0\0\0"
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\0\0" + tiff
    data = encoded.tobytes()
    return data[:2] + app1 + data[2:]


def test_exif_orientation_is_named_in_the_size_mismatch_and_warned_about(tmp_path, caplog):
    folder = write_folder(tmp_path / "data", [blocks((32, 48)), blocks((32, 32))])
    os.remove(folder / "rgb" / "img_0.png")
    os.remove(folder / "rgb" / "img_1.png")
    (folder / "rgb" / "img_0.jpg").write_bytes(exif_jpeg(np.zeros((32, 48, 3), np.uint8), 6))
    (folder / "rgb" / "img_1.jpg").write_bytes(exif_jpeg(np.zeros((32, 32, 3), np.uint8), 6))
    assert io.exif_orientation((folder / "rgb" / "img_0.jpg").read_bytes()) == 6
    reader = SegmentationFolder(folder)
    with pytest.raises(DataError, match="EXIF orientation 6, a quarter turn"):
        reader.load("img_0")  # stored 48x32, turned to 32x48 by the rule; its label has the stored size
    with caplog.at_level(logging.WARNING, "segzoo"):
        reader.load("img_1")  # square: the sizes agree, so the turn is said out loud
    assert "EXIF orientation 6" in caplog.text and "img_1.jpg" in caplog.text


def test_a_labelmap_with_a_bom_and_classes_without_colours(tmp_path):
    labels = parse_labelmap(("\ufeffbackground:0,0,0::\nhole:255,0,0::\n").encode("utf-8").decode("utf-8"))
    assert labels[0][0] == "background"
    (tmp_path / "labelmap.txt").write_bytes("\ufeffbackground:0,0,0::\n".encode("utf-8"))
    assert io.FolderFiles(tmp_path).read_text("labelmap.txt") == "background:0,0,0::\n"
    folder = write_folder(tmp_path / "data", [blocks()])
    (folder / CLASSES_FILE).write_text(json.dumps({"class_names": ["background", "hole"]}))
    reader = SegmentationFolder(folder)
    assert len(reader.colors) == 2 and reader.colors[0] != reader.colors[1]
    (folder / CLASSES_FILE).write_text(json.dumps({"colors": [[0, 0, 0]]}))
    with pytest.raises(DataError, match="no 'class_names' entry"):
        SegmentationFolder(folder)


# --- bounded untrusted input ---------------------------------------------------------------------------

def png_header(width, height):
    """The first bytes of a PNG claiming ``width`` x ``height`` (no pixels follow)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0\0\0\0"


def test_a_huge_image_is_refused_from_its_header(tmp_path, zip_folder):
    with pytest.raises(DataError, match=r"a\.png: its header says 100000x100000 pixels.*SEGZOO_MAX_IMAGE_PIXELS"):
        io.decode_image(png_header(100000, 100000), "a.png")
    folder = write_folder(tmp_path / "data", [blocks()])
    (folder / "rgb" / "img_0.png").write_bytes(png_header(20000, 20000))
    archive = zip_folder(folder, tmp_path / "small.zip")
    assert os.path.getsize(archive) < 15000
    with SegmentationZip(archive) as reader, pytest.raises(DataError, match=r"small\.zip!rgb/img_0\.png.*20000x20000"):
        reader.load("img_0")


def test_opencv_errors_name_the_file(monkeypatch):
    def fail(*args):
        raise cv2.error("OpenCV(4.10) error: (-215:Assertion failed) size.width>0 in function 'imdecode'")

    monkeypatch.setattr(cv2, "imdecode", fail)
    with pytest.raises(DataError, match=r"b\.png: OpenCV cannot decode this image \(.*Assertion failed"):
        io.decode_image(png_header(8, 8), "b.png")


def test_zip_and_list_sizes_are_bounded(tmp_path, zip_folder, monkeypatch):
    folder = write_folder(tmp_path / "data", [blocks(), blocks(seed=1)])
    os.makedirs(folder / "ImageSets" / "Segmentation")
    (folder / "ImageSets" / "Segmentation" / "train.txt").write_text("img_0\n" * 400_000)  # 2.4 MB, zips to KBs
    archive = zip_folder(folder, tmp_path / "bomb.zip")
    monkeypatch.setattr(io, "MAX_TEXT_BYTES", 1 << 20)
    with SegmentationZip(archive) as reader, pytest.raises(DataError, match="train.txt: 2400000 bytes.*MAX_TEXT_BYTES"):
        reader.subsets()
    monkeypatch.setattr(io, "MAX_ZIP_TOTAL_BYTES", 1 << 20)
    with pytest.raises(DataError, match="inflate to .* MAX_ZIP_TOTAL_BYTES"):
        io.open_zip(archive)
    monkeypatch.setattr(io, "MAX_ZIP_TOTAL_BYTES", 1 << 30)
    monkeypatch.setattr(io, "MAX_ZIP_MEMBER_BYTES", 1 << 20)
    with pytest.raises(DataError, match="train.txt: inflates to 2400000 bytes.*MAX_ZIP_MEMBER_BYTES"):
        io.ZipFiles(archive).read("ImageSets/Segmentation/train.txt")


def pth_with_tensor(path, size, stride, storage=b"\0\0\0\0"):
    """A ``.pth`` zip whose ``data.pkl`` holds ``{"w": tensor(size, stride)}`` over a float storage, hand-pickled."""
    def text(value):
        data = value.encode()
        return b"X" + struct.pack("<I", len(data)) + data

    def ints(values):
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"

    pickled = (b"\x80\x02}" + text("w") + b"ctorch._utils\n_rebuild_tensor_v2\n("
               + b"(" + text("storage") + b"ctorch\nFloatStorage\n" + text("0") + text("cpu") + b"K\x01tQ"
               + b"K\x00" + ints(size) + ints(stride) + b"\x89" + b"ccollections\nOrderedDict\n)R" + b"tRs.")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/data/0", storage)
    return path


def test_the_pth_reader_bounds_tensors_and_inflated_size(tmp_path, monkeypatch):
    good = load_torch_checkpoint(pth_with_tensor(tmp_path / "good.pth", [1], [1]))
    assert good["w"].shape == (1,)
    bomb = pth_with_tensor(tmp_path / "stride0.pth", [2_000_000_000], [0])
    assert os.path.getsize(bomb) < 1000
    with pytest.raises(CheckpointError, match="MAX_TENSOR_BYTES"):
        load_torch_checkpoint(bomb)
    with pytest.raises(CheckpointError, match="stride-0 or overlapping view"):
        load_torch_checkpoint(pth_with_tensor(tmp_path / "repeat.pth", [1000], [0]))
    assert torch_file.MAX_CHECKPOINT_BYTES <= 2 << 30 and torch_file.MAX_TENSOR_BYTES <= 1 << 30
    inflating = pth_with_tensor(tmp_path / "inflating.pth", [1], [1], storage=bytes(4 << 20))
    assert os.path.getsize(inflating) < 64 << 10
    monkeypatch.setattr(torch_file, "MAX_CHECKPOINT_BYTES", 1 << 20)
    with pytest.raises(CheckpointError, match="inflate to .*MAX_CHECKPOINT_BYTES.*SEGZOO_MAX_CHECKPOINT_BYTES"):
        load_torch_checkpoint(inflating)


# --- checkpoints: truncated, empty, not segzoo's ---------------------------------------------------------

def test_truncated_pth_and_keras_files_are_named_as_such(tmp_path):
    whole = pth_with_tensor(tmp_path / "whole.pth", [1], [1]).read_bytes()
    (tmp_path / "cut.pth").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="incomplete or corrupt download"):
        load_torch_checkpoint(tmp_path / "cut.pth")
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.save(tmp_path / "plain.keras")
    data = (tmp_path / "plain.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt .keras file"):
        load_model(tmp_path / "cut.keras")
    with pytest.raises(CheckpointError, match="not a segzoo segmentation model"):
        load_model(tmp_path / "plain.keras")


def fake_run(directory, last=b"", best=None):
    """A checkpoint folder as an interrupted older segzoo left it: state.json saying epoch 1 is saved."""
    os.makedirs(directory, exist_ok=True)
    files.write_json(directory / "state.json", {"epochs_done": 1, "best": 0.5, "monitor": "val_mean_iou"})
    (directory / "last.keras").write_bytes(last)
    if best is not None:
        (directory / "best.keras").write_bytes(best)
    return directory


def test_resume_refuses_a_truncated_last_or_an_empty_best_checkpoint(tmp_path):
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.save(tmp_path / "whole.keras")
    whole = (tmp_path / "whole.keras").read_bytes()
    run = fake_run(tmp_path / "cut", last=whole[: len(whole) // 3])
    with pytest.raises(CheckpointError, match=r"last\.keras: truncated or corrupt"):
        training.read_run_state(run)
    run = fake_run(tmp_path / "empty_best", last=whole, best=b"")
    with pytest.raises(CheckpointError, match=r"best\.keras: the file is empty \(0 bytes\)"):
        training.read_run_state(run)


def test_a_run_killed_while_saving_its_first_epoch_resumes_or_starts_anew(tmp_path):
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.save(tmp_path / "whole.keras")
    pending = {"epochs_done": 1, "monitor": "val_mean_iou", "best": 0.5,
               "last_sha256": files.file_digest(tmp_path / "whole.keras"),
               "best_sha256": files.file_digest(tmp_path / "whole.keras")}
    moved = tmp_path / "moved"  # killed after last.keras was moved in, before state.json said so
    os.makedirs(moved)
    files.write_json(moved / "state.json", {"pending": pending})
    shutil.copy(tmp_path / "whole.keras", moved / "last.keras")
    shutil.copy(tmp_path / "whole.keras", moved / "best.keras")
    state = training.read_run_state(moved)
    assert state["epochs_done"] == 1 and state["best"] == 0.5 and "pending" not in state
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).save(moved / "last.keras")
    with pytest.raises(CheckpointError, match="not the checkpoint state.json names for epoch 1"):
        training.read_run_state(moved)
    before = tmp_path / "before"  # killed with best.keras moved in, before last.keras was
    os.makedirs(before)
    files.write_json(before / "state.json", {"pending": pending})
    shutil.copy(tmp_path / "whole.keras", before / "best.keras")
    with pytest.raises(FileNotFoundError, match="no last.keras .*nothing to resume"):
        training.read_run_state(before)
    training._check_new_run(str(before))  # a new run goes ahead: the stopped one saved nothing to keep
    assert os.listdir(before) == []


# --- resume is honest ------------------------------------------------------------------------------------

def small_config(folder, run, **overrides):
    """A one-step run of the ``tiny`` preset (the ``tiny_preset`` fixture registers it)."""
    values = dict(data=str(folder), preset="tiny", epochs=1, batch_size=2, image_size=(32, 64),
                  steps_per_epoch=1, weights="none", checkpoint_dir=str(run), warmup_epochs=0.0, augment=False,
                  progress=0, val_ratio=0.25)
    values.update(overrides)
    return TrainConfig(**values)


def test_resume_with_other_settings_or_data_refuses_and_lists_the_differences(make_folder, tmp_path, tiny_preset):
    folder = make_folder(num_sources=4, copies=0, size=(32, 64))
    run = tmp_path / "run"
    train(small_config(folder, run))
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["learning_rate"] == 1e-3 and record["class_names"] == ["background", "hole", "crack"]
    assert record["data"]["files"]["count"] == 9  # 4 images, 4 labels, classes.json
    with pytest.raises(ConfigError, match=r"(?s)learning_rate cannot change.*learning_rate: 0\.001 -> 0\.01"):
        train(small_config(folder, run, resume=True, learning_rate=1e-2))
    fingerprint = record["data"]
    names = record["class_names"]

    def check(**overrides):
        training._check_resume(run, small_config(folder, run, resume=True, **overrides), fingerprint, names, 3)

    check()  # the same run: fine
    check(progress=2, cache=True)  # how it runs, not what: fine
    for field, value in (("preset", "pidnet_s"), ("loss", "focal"), ("optimizer", "sgd"), ("schedule", "cosine")):
        with pytest.raises(ConfigError, match=f"(?s){field} cannot change.*{field}: .* -> '{value}'"):
            check(**{field: value}, allow_changes=True)
    with pytest.raises(ConfigError, match=r"(?s)epochs: 1 -> 3.*allow_changes"):
        check(epochs=3)
    check(epochs=3, allow_changes=True)
    with pytest.raises(ConfigError, match="data files"):
        training._check_resume(run, small_config(folder, run, resume=True), {**fingerprint, "files": {}}, names, 3)
    five = names + ["dent", "rust"]
    with pytest.raises(ConfigError, match="3 output class.*5 classes"):
        training._check_resume(run, small_config(folder, run, resume=True, allow_changes=True), fingerprint, five, 3)


#: What a checkpoint save writes (see ``training._RunState``), under temporary names while it runs.
SAVED_FILES = (training.LAST_CHECKPOINT, training.BEST_CHECKPOINT, training.STATE_FILE)


def saves_in_progress(run):
    """The temporary files of checkpoint saves in ``run``: a save in progress, or one a kill cut."""
    names = os.listdir(run) if os.path.isdir(run) else []
    return {name for name in names if name.startswith(files.PARTIAL_PREFIX) and name.endswith(SAVED_FILES)}


def epochs_saved(run):
    """``epochs_done`` in ``run/state.json`` (replaced atomically: always complete JSON), 0 without one."""
    path = run / training.STATE_FILE
    return json.loads(path.read_text()).get("epochs_done", 0) if path.exists() else 0


def kill_when(process, ready, delay, timeout=120):
    """SIGKILL ``process`` ``delay`` seconds after ``ready()`` holds (or after ``timeout``); whether it was alive."""
    deadline = time.perf_counter() + timeout
    while process.poll() is None and not ready() and time.perf_counter() < deadline:
        time.sleep(0.001)
    time.sleep(delay)
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.wait()
    return True


def kill_at(process, run, mode, rng, earlier):
    """Kill a training: ``startup`` at a random moment of its start, ``save`` inside one of its first saves,
    ``after_save`` just after it saved an epoch, ``anywhere`` at a random moment after that.

    ``earlier``: temporary files an earlier kill left (the training deletes them when it starts).
    """
    before, seen = epochs_saved(run), set()

    def saving(count):
        def ready():
            seen.update(name for name in saves_in_progress(run) - earlier if name.endswith(".keras"))
            return len(seen) >= count
        return ready

    if mode == "startup":
        return kill_when(process, lambda: True, rng.uniform(0.0, 8.0))
    if mode == "save":  # soon after the n-th temporary best.keras or last.keras appears
        return kill_when(process, saving(int(rng.integers(1, 5))), rng.uniform(0.0, 0.02))
    return kill_when(process, lambda: epochs_saved(run) > before,
                     rng.uniform(0.0, 0.005 if mode == "after_save" else 0.6))


@pytest.mark.slow
def test_random_kills_never_leave_a_truncated_checkpoint_taken_as_good(make_folder, tmp_path):
    """SIGKILL a training many times at random moments, inside saves and between them; every resume continues.

    ``_RunState`` saves in an order that leaves every moment resumable (see ``read_run_state``), so no
    attempt may fail or refuse: each one is killed, the last one completes the run.
    """
    folder = make_folder(num_sources=4, copies=0, size=(32, 64))
    run = tmp_path / "run"
    epochs = 20
    argv = ["train", "--data", str(folder), "--preset", "tiny", "--epochs", str(epochs), "--batch_size", "2",
            "--image_size", "32", "64", "--steps_per_epoch", "1", "--weights", "none", "--checkpoint_dir", str(run),
            "--warmup_epochs", "0", "--no_augment", "--progress", "0", "--val_ratio", "0.25"]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO_ROOT, TESTS_DIR]),
                   "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    rng = np.random.default_rng(0)
    plan = [str(mode) for mode in rng.permutation(["save"] * 5 + ["after_save"] * 2 + ["anywhere"] * 2 + ["startup"])]
    kills, failures, started = [], [], time.perf_counter()
    for attempt, mode in enumerate([*plan, "complete"]):
        resume = (run / training.STATE_FILE).exists()
        before = training.read_run_state(run)["epochs_done"] if resume else 0
        earlier = saves_in_progress(run)
        log = tmp_path / f"attempt_{attempt}.log"  # a file: a full pipe would stop the training
        with open(log, "wb") as stderr:
            process = subprocess.Popen([sys.executable, "-c", TINY_CLI, *argv, *(["--resume"] if resume else [])],
                                       env=environment, stdout=subprocess.DEVNULL, stderr=stderr)
            killed = mode != "complete" and kill_at(process, run, mode, rng, earlier)
            process.wait(timeout=300)
        if process.returncode != (-signal.SIGKILL if killed else 0):
            failures.append(f"{mode} (resume {resume}): exit status {process.returncode}\n{log.read_text()[-2000:]}")
            break
        if killed:  # (mode, whether it cut a save, epochs saved)
            kills.append((mode, bool(saves_in_progress(run) - earlier), epochs_saved(run)))
        if (run / training.STATE_FILE).exists():  # what the next resume takes: the files it names, never older
            state = training.read_run_state(run)
            assert state.get("epochs_done", -1) >= before, (mode, state)
            assert files.file_digest(run / training.LAST_CHECKPOINT) == state["last_sha256"]
    summary = (kills, f"{time.perf_counter() - started:.0f} s")
    assert not failures, failures
    in_saves = sum(cut for _, cut, _ in kills)
    assert len(kills) == len(plan) and in_saves >= 4 and len(kills) - in_saves >= 2, summary
    state = json.loads((run / "state.json").read_text())
    assert state["epochs_done"] == epochs and "pending" not in state
    model = load_model(run / "last.keras")
    assert int(model.optimizer.iterations) == epochs  # one step per epoch: no epoch lost or run twice
    assert files.file_digest(run / "last.keras") == state["last_sha256"]
    assert not [name for name in os.listdir(run) if name.startswith(files.PARTIAL_PREFIX)]
