"""segzoo.prediction and segzoo.data.cvat_writer: folder prediction, sliding windows, CVAT pre-annotations, ranking."""

import csv
import os
import zipfile

import cv2
import keras
import numpy as np
import pytest

from harness import TinyBackbone, TinyHead
from segzoo import cli, prediction
from segzoo.data import make_cvat_sample, read_cvat
from segzoo.data.cvat_writer import CvatWriter, instance_mask, write_cvat_zip
from segzoo.errors import OutputExistsError
from segzoo.inference import FramePredictor
from segzoo.models import SegmentationModel

NAMES = ["background", "hole", "crack"]
COLORS = [(0, 0, 0), (250, 50, 83), (51, 221, 255)]
SIZE = (32, 48)  # height, width
LEVELS = (20, 120, 220)  # red value of each class in the training images


def coded_images(count, rng):
    """Images whose red channel says the class of each 8x8 block; green and blue are noise."""
    blocks = rng.integers(0, 3, (count, SIZE[0] // 8, SIZE[1] // 8))
    labels = np.kron(blocks, np.ones((1, 8, 8), np.int64)).astype(np.int32)
    images = rng.integers(0, 256, (count, *SIZE, 3)).astype(np.uint8)
    images[..., 0] = np.asarray(LEVELS, np.uint8)[labels]
    return images, labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained (a few seconds) to read the class from the red channel, saved as a checkpoint."""
    keras.utils.set_random_seed(0)
    model = SegmentationModel(TinyBackbone(), TinyHead(3), class_names=NAMES, class_colors=COLORS)
    images, labels = coded_images(64, np.random.default_rng(0))
    model.compile(optimizer=keras.optimizers.Adam(0.02),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images.astype(np.float32), labels, batch_size=16, epochs=25, verbose=0)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return model, str(path)


def write_images(folder, images, names):
    for name, image in zip(names, images):
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """In-distribution images in subfolders, extensions in several cases (PNG: exact pixels)."""
    images, _ = coded_images(4, np.random.default_rng(1))
    return write_images(str(tmp_path_factory.mktemp("images")), images,
                        ["a.png", "batch_1/b.PNG", "batch_1/c.Png", "batch_2/deep/d.png"])


def test_one_window_covering_the_image_equals_whole_image_inference(trained):
    predictor = FramePredictor(trained[0])
    image = np.random.default_rng(2).integers(0, 256, (*SIZE, 3)).astype(np.float32)
    whole = predictor.probabilities(image[None])[0]
    np.testing.assert_array_equal(prediction.sliding_window_predict(predictor.probabilities, image, SIZE), whole)


def test_windows_cover_the_image_and_average_where_they_overlap():
    calls = []

    def forward(images):  # a per-pixel model: any tiling must give the same probabilities
        calls.append(images.shape)
        p = images[..., :2] / 255.0
        return p / np.maximum(p.sum(-1, keepdims=True), 1e-6)

    image = np.random.default_rng(3).integers(1, 256, (40, 70, 3)).astype(np.float32)
    tiled = prediction.sliding_window_predict(forward, image, (16, 24), overlap=0.5, batch_size=3)
    assert all(shape[1:3] == (16, 24) for shape in calls) and max(s[0] for s in calls) == 3
    np.testing.assert_allclose(tiled, forward(image[None])[0], atol=1e-6)
    assert prediction.window_starts(40, 16, 8) == [0, 8, 16, 24] and prediction.window_starts(10, 16, 8) == [0]
    small = prediction.sliding_window_predict(forward, image[:10, :20], (16, 24))  # padded up to one window
    assert small.shape == (10, 20, 2)


def test_instances_are_the_connected_regions_of_each_class():
    classes = np.zeros((12, 12), np.uint8)
    classes[0:3, 0:3] = 1
    classes[6:9, 6:9] = 1
    classes[0:3, 8:12] = 2
    instances = instance_mask(classes)
    assert len(np.unique(instances)) == 4 and (instances[classes == 0] == 0).all()
    for k in np.unique(instances)[1:]:
        assert len(np.unique(classes[instances == k])) == 1
    capped = instance_mask(classes, max_instances=2)  # the smaller region of class 1 joins the larger one
    assert len(np.unique(capped)) == 3 and len(np.unique(capped[classes == 1])) == 1


def _datumaro_labels(path):
    """id -> class ids (by name order of ``NAMES``) as datumaro, CVAT's importer, reads the zip."""
    dm = pytest.importorskip("datumaro")
    dataset = dm.Dataset.import_from(str(path), "voc_segmentation")
    labels = dataset.categories()[dm.AnnotationType.label]
    result = {}
    for item in dataset:
        classes = np.zeros(SIZE, np.uint8)
        for mask in item.annotations:
            classes[mask.image.astype(bool)] = NAMES.index(labels[mask.label].name)
        result[item.id] = classes
    return result


def test_prediction_to_cvat_zip_reads_back_identically_in_datumaro_and_read_cvat(trained, folder, tmp_path):
    model, _ = trained
    out = tmp_path / "out"
    result = prediction.predict_folder(FramePredictor(model), folder, out, NAMES, COLORS,
                                       formats=("png", "cvat"), confidence=True, batch_size=3, progress=False)
    assert result["images"] == 4 and result["cvat_zip"] == str(out / prediction.CVAT_ZIP)
    ids = ["a", "batch_1/b", "batch_1/c", "batch_2/deep/d"]
    predicted = {i: cv2.imread(str(out / "classes" / f"{i}.png"), cv2.IMREAD_UNCHANGED) for i in ids}
    assert all(p.shape == SIZE and p.dtype == np.uint8 for p in predicted.values())
    assert all(len(np.unique(p)) == 3 for p in predicted.values())  # every class occurs: a real test
    confidence = cv2.imread(str(out / "confidence" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert confidence.dtype == np.uint16 and confidence.shape == SIZE and confidence.min() >= 65535 // 3
    color = cv2.cvtColor(cv2.imread(str(out / "colors" / "batch_1" / "b.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(color, np.array(COLORS, np.uint8)[predicted["batch_1/b"]])
    assert (out / "overlays" / "batch_2" / "deep" / "d.png").is_file()

    with zipfile.ZipFile(out / prediction.CVAT_ZIP) as archive:
        members = archive.namelist()
        assert archive.read("labelmap.txt").decode().splitlines()[1] == "background:0,0,0::"
        assert archive.read("ImageSets/Segmentation/default.txt").decode().split() == ids
    assert "SegmentationObject/batch_2/deep/d.png" in members and not any(m.endswith("/") for m in members)
    extracted = tmp_path / "extracted"  # CVAT extracts the uploaded zip and imports the folder with datumaro
    zipfile.ZipFile(out / prediction.CVAT_ZIP).extractall(extracted)
    read_back = _datumaro_labels(extracted)
    assert sorted(read_back) == ids
    for item_id in ids:
        np.testing.assert_array_equal(read_back[item_id], predicted[item_id])
    dataset = read_cvat(out / prediction.CVAT_ZIP, images=folder)  # segzoo's reader, on the zip itself
    assert dataset.class_names == NAMES and dataset.ids == ids
    for item_id, _, label in dataset.items():
        np.testing.assert_array_equal(label, predicted[item_id])


def test_all_background_gets_no_mask_and_a_binary_model_names_its_class(folder, tmp_path):
    from segzoo.inference import model_classes

    binary = SegmentationModel(TinyBackbone(), TinyHead(1), class_names=["background", "defect"],
                               class_colors=[(0, 0, 0), (255, 0, 0)])
    names, colors = model_classes(binary)
    result = prediction.predict_folder(FramePredictor(binary), folder, tmp_path / "out", names, colors,
                                       formats=("cvat",), progress=False)
    assert set(result["class_pixels"]) == {"background", "defect"}
    dataset = read_cvat(result["cvat_zip"], images=folder)
    assert dataset.class_names == ["background", "defect"] and len(dataset) == 4
    path = write_cvat_zip(tmp_path / "binary.zip", [("empty", np.zeros(SIZE, np.uint8)),
                                                    ("one", np.pad(np.ones((4, 4), np.uint8), 8))],
                          ["background", "defect"], [(9, 9, 9), (255, 0, 0)])
    with zipfile.ZipFile(path) as archive:
        assert "SegmentationClass/empty.png" not in archive.namelist()
        assert archive.read("labelmap.txt").decode().splitlines()[1:] == ["background:0,0,0::",
                                                                          "defect:255,0,0::"]
    with pytest.raises(OutputExistsError, match="overwrite"):
        CvatWriter(path, ["background", "defect"], [(0, 0, 0), (255, 0, 0)])


def test_predict_refuses_a_non_empty_output_and_an_output_inside_the_images(trained, folder, tmp_path):
    predictor = FramePredictor(trained[0])
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="not empty"):
        prediction.predict_folder(predictor, folder, tmp_path / "taken", NAMES, COLORS, progress=False)
    with pytest.raises(OutputExistsError, match="inside the input folder"):
        prediction.predict_folder(predictor, folder, os.path.join(folder, "out"), NAMES, COLORS, progress=False)


def test_out_of_distribution_images_rank_first_and_near_duplicates_go_last(trained, tmp_path):
    model, _ = trained
    rng = np.random.default_rng(4)
    familiar, _ = coded_images(6, rng)
    strange, labels = coded_images(6, rng)  # red halfway between the class levels: outside what it was taught
    strange[..., 0] = np.asarray((70, 170, 70), np.uint8)[labels]
    names = [f"known_{i}.png" for i in range(6)] + [f"odd_{i}.png" for i in range(6)]
    images = write_images(str(tmp_path / "unlabelled"), list(familiar) + list(strange), names)
    predictor = FramePredictor(model)
    for score in prediction.SCORES:
        ranking = prediction.rank_images(predictor, images, score=score, margin=0.3, duplicate_distance=-1,
                                         progress=False)
        assert {r.id for r in ranking[:6]} == {f"odd_{i}" for i in range(6)}, (score, ranking)
        assert ranking[0].score > ranking[-1].score
    # ten noisy frames of one odd scene: only the first of them stays near the top
    scene = cv2.resize(strange[0], (SIZE[1] // 4, SIZE[0] // 4), interpolation=cv2.INTER_AREA)
    scene = cv2.resize(scene, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_CUBIC)
    frames = [np.clip(scene + rng.normal(0, 2, scene.shape), 0, 255).astype(np.uint8) for _ in range(10)]
    write_images(images, frames, [f"scene/frame_{i}.png" for i in range(10)])
    ranking = prediction.rank_images(predictor, images, progress=False)
    top = [r.id for r in ranking if r.duplicate_of is None]
    assert sum(i.startswith("scene/") for i in top) == 1
    assert all(r.duplicate_of is not None for r in ranking[len(top):])
    written = prediction.write_ranking(ranking, tmp_path / "rank", top=3, copy=True, images_dir=images)
    rows = list(csv.DictReader(open(written["csv"], encoding="utf-8")))
    assert len(rows) == len(ranking) and rows[0]["path"] == ranking[0].path
    assert open(written["top_list"]).read().split() == [r.path for r in ranking[:3]]
    assert len(os.listdir(written["copied"])) >= 1


def test_commands_run_on_the_quickstart_sample_and_a_datumaro_export(trained, tmp_path, capsys):
    from test_data_inspection import datumaro_export

    _, checkpoint = trained
    sample = make_cvat_sample(tmp_path / "sample", num_images=4, image_size=SIZE, video_frames=0,
                              num_backgrounds=1, save_images=False)
    out = tmp_path / "predicted"
    assert cli.main(["predict", "--checkpoint", checkpoint, "--images", sample.images, "--output", str(out),
                     "--format", "png", "cvat", "--tile", "16", "24", "--batch_size", "2"]) == 0
    assert "4 images predicted" in capsys.readouterr().out
    assert read_cvat(out / prediction.CVAT_ZIP, images=sample.images).ids == list(sample.ids)
    assert cli.main(["predict", "--checkpoint", checkpoint, "--images", sample.images, "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main(["rank", "--checkpoint", checkpoint, "--images", sample.images, "--output",
                     str(tmp_path / "rank"), "--top", "2", "--score", "margin", "--input_size", "32", "48"]) == 0
    assert "4 images ranked" in capsys.readouterr().out
    assert len(open(tmp_path / "rank" / prediction.TOP_LIST).read().split()) == 2
    export = datumaro_export(tmp_path / "export")  # the images of an export datumaro wrote, as CVAT does
    out = tmp_path / "from_export"
    assert cli.main(["predict", "--checkpoint", checkpoint, "--images", str(export / "JPEGImages"), "--output",
                     str(out), "--format", "cvat", "--runtime", "keras"]) == 0
    assert read_cvat(out / prediction.CVAT_ZIP, images=export / "JPEGImages").ids == read_cvat(export).ids
    assert cli.main(["rank", "--checkpoint", checkpoint, "--images", str(export / "JPEGImages"), "--output",
                     str(tmp_path / "rank_export")]) == 0
    assert "8 images ranked (1 near-duplicates moved last)" in capsys.readouterr().out  # f2 and f3 are one picture
