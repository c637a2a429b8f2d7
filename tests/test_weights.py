"""segzoo.weights: official DDRNet checkpoints give the official model's logits; bad files are refused.

The reference is a PyTorch DDRNet written here from the official layout and
parameter names (ydhongHIT/DDRNet, segmentation/DDRNet_*.py), with random
weights and random batch-norm statistics, in eval mode. Logits are compared at
stride 8, where the official model returns them (layer for layer, no resize of
ours involved), and at full size against the official evaluation's bilinear
upsampling (align_corners=False).
"""

import collections
import importlib.util
import logging
import os
import pickle
import shutil
import zipfile

import keras
import numpy as np
import pytest

from harness import REPO_ROOT, random_images, run_official
from segzoo import errors, presets, weights
from segzoo.backbones import ddrnet_weights, pretrained
from segzoo.files import file_digest
from segzoo.weights import CheckpointError, convert_ddrnet, load_torch_checkpoint

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional



# --- The official DDRNet in PyTorch (reference; own code, official module names) ---------------

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, no_relu=False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample, self.no_relu = downsample, no_relu

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        out = out + (x if self.downsample is None else self.downsample(x))
        return out if self.no_relu else F.relu(out)


class Bottleneck(nn.Module):
    expansion = 2

    def __init__(self, inplanes, planes, stride=1, downsample=None, no_relu=True):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 2, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 2)
        self.downsample, self.no_relu = downsample, no_relu

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        out = out + (x if self.downsample is None else self.downsample(x))
        return out if self.no_relu else F.relu(out)


def make_layer(block, inplanes, planes, blocks, stride=1):
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
                                   nn.BatchNorm2d(planes * block.expansion))
    layers = [block(inplanes, planes, stride, downsample)]
    for index in range(1, blocks):
        layers.append(block(planes * block.expansion, planes, no_relu=index == blocks - 1))
    return nn.Sequential(*layers)


def bn_relu_conv(inplanes, planes, kernel_size, pool=None):
    modules = ([pool] if pool is not None else []) + [
        nn.BatchNorm2d(inplanes), nn.ReLU(),
        nn.Conv2d(inplanes, planes, kernel_size, padding=kernel_size // 2, bias=False)]
    return nn.Sequential(*modules)


class DAPPM(nn.Module):
    def __init__(self, inplanes, branch_planes, outplanes):
        super().__init__()
        self.scale1 = bn_relu_conv(inplanes, branch_planes, 1, nn.AvgPool2d(5, 2, 2))
        self.scale2 = bn_relu_conv(inplanes, branch_planes, 1, nn.AvgPool2d(9, 4, 4))
        self.scale3 = bn_relu_conv(inplanes, branch_planes, 1, nn.AvgPool2d(17, 8, 8))
        self.scale4 = bn_relu_conv(inplanes, branch_planes, 1, nn.AdaptiveAvgPool2d((1, 1)))
        self.scale0 = bn_relu_conv(inplanes, branch_planes, 1)
        for index in range(1, 5):
            setattr(self, f"process{index}", bn_relu_conv(branch_planes, branch_planes, 3))
        self.compression = bn_relu_conv(branch_planes * 5, outplanes, 1)
        self.shortcut = bn_relu_conv(inplanes, outplanes, 1)

    def forward(self, x):
        outputs = [self.scale0(x)]
        for index in range(1, 5):
            scaled = F.interpolate(getattr(self, f"scale{index}")(x), size=x.shape[-2:], mode="bilinear",
                                   align_corners=False)
            outputs.append(getattr(self, f"process{index}")(scaled + outputs[-1]))
        return self.compression(torch.cat(outputs, 1)) + self.shortcut(x)


class SegmentHead(nn.Module):
    def __init__(self, inplanes, interplanes, outplanes):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, interplanes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(interplanes)
        self.conv2 = nn.Conv2d(interplanes, outplanes, 1, bias=True)

    def forward(self, x):
        return self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))


class DualResNet(nn.Module):
    """The official segmentation DualResNet with augment=True; forward returns a dict of tensors."""

    def __init__(self, layers, num_classes, planes, head_planes, stage3_splits=1, spp_planes=128):
        super().__init__()
        highres = planes * 2
        self.conv1 = nn.Sequential(nn.Conv2d(3, planes, 3, 2, 1), nn.BatchNorm2d(planes), nn.ReLU(),
                                   nn.Conv2d(planes, planes, 3, 2, 1), nn.BatchNorm2d(planes), nn.ReLU())
        self.layer1 = make_layer(BasicBlock, planes, planes, layers[0])
        self.layer2 = make_layer(BasicBlock, planes, planes * 2, layers[1], stride=2)
        self.stage3 = ["3"] if stage3_splits == 1 else [f"3_{i + 1}" for i in range(stage3_splits)]
        for index, suffix in enumerate(self.stage3):
            blocks = layers[2] // stage3_splits
            setattr(self, f"layer{suffix}", make_layer(BasicBlock, planes * (4 if index else 2), planes * 4,
                                                       blocks, stride=1 if index else 2))
            setattr(self, f"layer{suffix}_", make_layer(BasicBlock, highres if index else planes * 2, highres,
                                                        blocks))
            setattr(self, f"compression{suffix}", nn.Sequential(nn.Conv2d(planes * 4, highres, 1, bias=False),
                                                                nn.BatchNorm2d(highres)))
            setattr(self, f"down{suffix}", nn.Sequential(nn.Conv2d(highres, planes * 4, 3, 2, 1, bias=False),
                                                         nn.BatchNorm2d(planes * 4)))
        self.layer4 = make_layer(BasicBlock, planes * 4, planes * 8, layers[3], stride=2)
        self.layer4_ = make_layer(BasicBlock, highres, highres, layers[3])
        self.compression4 = nn.Sequential(nn.Conv2d(planes * 8, highres, 1, bias=False), nn.BatchNorm2d(highres))
        self.down4 = nn.Sequential(nn.Conv2d(highres, planes * 4, 3, 2, 1, bias=False), nn.BatchNorm2d(planes * 4),
                                   nn.ReLU(), nn.Conv2d(planes * 4, planes * 8, 3, 2, 1, bias=False),
                                   nn.BatchNorm2d(planes * 8))
        self.layer5_ = make_layer(Bottleneck, highres, highres, 1)
        self.layer5 = make_layer(Bottleneck, planes * 8, planes * 8, 1, stride=2)
        self.spp = DAPPM(planes * 16, spp_planes, planes * 4)
        self.seghead_extra = SegmentHead(highres, head_planes, num_classes)
        self.final_layer = SegmentHead(planes * 4, head_planes, num_classes)

    def _fuse(self, low, high, suffix, size):
        new_low = getattr(self, f"layer{suffix}")(F.relu(low))
        new_high = getattr(self, f"layer{suffix}_")(F.relu(high))
        low = new_low + getattr(self, f"down{suffix}")(F.relu(new_high))
        up = F.interpolate(getattr(self, f"compression{suffix}")(F.relu(new_low)), size=size, mode="bilinear",
                           align_corners=False)
        return low, new_high + up

    def forward(self, x):
        size = (x.shape[-2] // 8, x.shape[-1] // 8)
        low = high = self.layer2(F.relu(self.layer1(self.conv1(x))))
        for suffix in self.stage3:
            low, high = self._fuse(low, high, suffix, size)
        high_stage3 = high
        low, high = self._fuse(low, high, "4", size)
        high = self.layer5_(F.relu(high))
        low = self.layer5(F.relu(low))
        context = F.interpolate(self.spp(low), size=size, mode="bilinear", align_corners=False)
        return {"logits": self.final_layer(context + high), "aux_logits": self.seghead_extra(high_stage3),
                "high": high, "low": low, "high_stage3": high_stage3}


TORCH_CONFIGS = {
    "ddrnet23_slim": dict(layers=(2, 2, 2, 2), planes=32, head_planes=64),
    "ddrnet23": dict(layers=(2, 2, 2, 2), planes=64, head_planes=128),
    "ddrnet39": dict(layers=(3, 4, 6, 3), planes=64, head_planes=256, stage3_splits=2),
}


def official_model(name, num_classes=19, seed=0):
    """The official architecture with random weights and random batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = DualResNet(num_classes=num_classes, **TORCH_CONFIGS[name])
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def run_segzoo(model, images):
    features = model.backbone(images, training=False)
    outputs = {"logits": model.head(features, training=False), "aux_logits": model.aux_head(features),
               "upsampled": model(images, training=False), **features}
    return {key: keras.ops.convert_to_numpy(value) for key, value in outputs.items()}


def assert_relative_error_below(actual, expected, tolerance=1e-4, what=""):
    error = float(np.abs(actual - expected).max() / np.abs(expected).max())
    assert error < tolerance, f"{what}: relative error {error:.2e}"
    return error


def numpy_state(model, prefix=""):
    return {prefix + key: value.numpy() for key, value in model.state_dict().items()}


@pytest.fixture(scope="module")
def slim_official():
    return official_model("ddrnet23_slim")


# --- Parity ----------------------------------------------------------------------------------

def check_parity(name, model, reference, sizes=((64, 64), (72, 88))):
    for height, width in sizes:
        images = random_images(2, height, width, seed=height)
        expected, actual = run_official(reference, images), run_segzoo(model, images)
        for key in ("logits", "aux_logits", "upsampled", "high", "low", "high_stage3"):
            assert actual[key].shape == expected[key].shape, key
            assert_relative_error_below(actual[key], expected[key], what=f"{name} {key} {height}x{width}")


@pytest.mark.parametrize("name", list(TORCH_CONFIGS))
def test_official_checkpoint_from_pth_matches_pytorch(name, tmp_path):
    reference = official_model(name)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    model = convert_ddrnet(path, name)
    assert model.num_classes == 19
    check_parity(name, model, reference)


def test_numpy_dict_with_wrapper_prefixes_and_loss_buffers(slim_official, tmp_path):
    state = numpy_state(slim_official, prefix="model.")  # the authors' training code wraps the net
    state["loss.criterion.weight"] = np.ones(19, "float32")
    model = convert_ddrnet({"state_dict": state, "epoch": 3}, "ddrnet23_slim")
    check_parity("ddrnet23_slim", model, slim_official, sizes=((64, 64),))
    # The same through a .pth with "module." prefixes and a numpy metric beside the weights.
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in slim_official.state_dict().items()},
                "best_mIoU": np.float64(0.75), "epoch": 7}, path)
    converted = convert_ddrnet(path, "ddrnet23_slim")
    for mine, theirs in zip(converted.weights, model.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs))


def test_saved_weights_load_through_from_name(slim_official, tmp_path):
    output = str(tmp_path / "cityscapes.weights.h5")
    model = convert_ddrnet(numpy_state(slim_official), "ddrnet23_slim", output=output)
    loaded = presets.from_name("ddrnet23_slim", num_classes=19, weights=output)
    images = random_images(1, 64, 64)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), model.predict(images, verbose=0))
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        convert_ddrnet(numpy_state(slim_official), "ddrnet23_slim", output=str(tmp_path / "x.h5"))


# --- Mismatches ------------------------------------------------------------------------------

def test_missing_unexpected_and_misshaped_keys_are_listed(slim_official):
    state = numpy_state(slim_official)
    del state["layer1.0.conv1.weight"]
    state["layer9.0.conv1.weight"] = np.zeros((3, 3, 1, 1), "float32")
    state["spp.scale0.2.weight"] = np.zeros((64, 512, 1, 1), "float32")
    with pytest.raises(CheckpointError) as error:
        convert_ddrnet(state, "ddrnet23_slim")
    message = str(error.value)
    assert "missing from the checkpoint: layer1.0.conv1.weight" in message
    assert "not in the model: layer9.0.conv1.weight" in message
    assert "spp.scale0.2.weight: checkpoint (64, 512, 1, 1), model needs (128, 512, 1, 1)" in message


def test_a_refused_checkpoint_changes_nothing(slim_official):
    model = presets.from_name("ddrnet23_slim", num_classes=19)
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
    state = numpy_state(slim_official)
    state["final_layer.conv2.bias"] = np.zeros(5, "float32")
    with pytest.raises(CheckpointError, match="final_layer.conv2.bias"):
        weights.load_official_weights(model, state)
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))


def test_wrong_class_count_and_other_formats_are_explained(slim_official):
    expected = r"final_layer.conv2.weight: checkpoint \(19, 64, 1, 1\), model needs \(2, 64, 1, 1\)"
    with pytest.raises(CheckpointError, match=expected):
        convert_ddrnet(numpy_state(slim_official), "ddrnet23_slim", num_classes=2)
    mmseg = {"backbone.stem.0.conv.weight": np.zeros((32, 3, 3, 3), "float32")}
    with pytest.raises(CheckpointError, match="MMSegmentation"):
        convert_ddrnet(mmseg, "ddrnet23_slim", num_classes=2)


# --- ImageNet (trunk-only) checkpoints -------------------------------------------------------

def imagenet_state(reference):
    """The official ImageNet file's layout: the trunk plus a classifier, no segmentation heads."""
    state = {k: v for k, v in numpy_state(reference).items()
             if not k.startswith(("spp.", "final_layer.", "seghead_extra."))}
    state.update({"down5.0.weight": np.zeros((256, 128, 3, 3), "float32"),
                  "last_layer.0.weight": np.zeros((1024, 512, 1, 1), "float32"),
                  "linear.weight": np.zeros((1000, 1024), "float32"), "linear.bias": np.zeros(1000, "float32")})
    return state


def test_trunk_checkpoint_loads_into_a_new_head(slim_official, caplog):
    state = imagenet_state(slim_official)
    with pytest.raises(CheckpointError, match="num_classes"):
        convert_ddrnet(state, "ddrnet23_slim")
    fresh_head = presets.from_name("ddrnet23_slim", num_classes=2).head
    with caplog.at_level(logging.INFO, logger="segzoo.weights"):
        model = convert_ddrnet(state, "ddrnet23_slim", num_classes=2)
    assert "spp and final_layer and seghead_extra not in the checkpoint" in caplog.text
    assert model.num_classes == 2
    images = random_images(1, 64, 64)
    expected, actual = run_official(slim_official, images), run_segzoo(model, images)
    for key in ("high", "low", "high_stage3"):
        assert_relative_error_below(actual[key], expected[key], what=key)
    # The head kept its initialisation: unit batch norms, as a fresh model has.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.head.spp.scale_norms[0].gamma),
                                  keras.ops.convert_to_numpy(fresh_head.spp.scale_norms[0].gamma))


def test_imagenet_weights_are_found_in_the_cache_or_explained(slim_official, tmp_path, monkeypatch):
    """Without a download (as for ddrnet39), the authors' file is converted by hand."""
    monkeypatch.setenv("SEGZOO_WEIGHTS_DIR", str(tmp_path / "cache"))
    monkeypatch.delitem(ddrnet_weights.IMAGENET_DOWNLOADS, "ddrnet23_slim")
    with pytest.raises(FileNotFoundError) as error:
        presets.from_name("ddrnet23_slim", weights="imagenet")
    message = str(error.value)
    assert weights.OFFICIAL_CHECKPOINTS["ddrnet23_slim"]["imagenet"] in message
    assert "segzoo convert <downloaded .pth> --preset ddrnet23_slim --imagenet" in message
    assert "weights='none'" in message
    # The documented command, through the example script's main().
    checkpoint = tmp_path / "DDRNet23s_imagenet.pth"
    torch.save({k: torch.from_numpy(v) for k, v in imagenet_state(slim_official).items()}, checkpoint)
    spec = importlib.util.spec_from_file_location("convert_ddrnet", os.path.join(REPO_ROOT, "examples",
                                                                                 "convert_ddrnet.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main([str(checkpoint), "--preset", "ddrnet23_slim", "--imagenet"])
    path = weights.imagenet_weights_path("ddrnet23_slim")
    assert path.startswith(str(tmp_path)) and os.path.isfile(path)
    model = presets.from_name("ddrnet23_slim", num_classes=5, weights="imagenet")
    images = random_images(1, 64, 64)
    assert_relative_error_below(run_segzoo(model, images)["high"], run_official(slim_official, images)["high"])


# --- weights="imagenet" downloads MMSegmentation's conversion of the authors' file -----------------

#: The authors' module -> MMSegmentation's (mmseg/models/backbones/ddrnet.py), written out here by hand.
MMSEG_NAMES = {"conv1.0": "stem.0.conv", "conv1.1": "stem.0.bn", "conv1.3": "stem.1.conv", "conv1.4": "stem.1.bn",
               "layer1": "stem.2", "layer2": "stem.4", "layer3": "context_branch_layers.0",
               "layer4": "context_branch_layers.1", "layer5": "context_branch_layers.2",
               "layer3_": "spatial_branch_layers.0", "layer4_": "spatial_branch_layers.1",
               "layer5_": "spatial_branch_layers.2", "compression3.0": "compression_1.conv",
               "compression3.1": "compression_1.bn", "compression4.0": "compression_2.conv",
               "compression4.1": "compression_2.bn", "down3.0": "down_1.conv", "down3.1": "down_1.bn",
               "down4.0": "down_2.0.conv", "down4.1": "down_2.0.bn", "down4.3": "down_2.1.conv",
               "down4.4": "down_2.1.bn"}


def mmseg_trunk(reference):
    """The trunk of ``reference`` as MMSegmentation's DDRNet names and builds it: ConvModules
    (``convN.conv``/``convN.bn`` in blocks), bias-free stem convolutions (their bias folded into the
    batch-norm means that follow), no classifier and no heads."""
    official = {k: v.copy() for k, v in numpy_state(reference).items()
                if not k.startswith(("spp.", "final_layer.", "seghead_extra."))}
    for conv, norm in (("conv1.0", "conv1.1"), ("conv1.3", "conv1.4")):
        official[f"{norm}.running_mean"] -= official.pop(f"{conv}.bias")
    mmseg = {}
    for key, value in official.items():
        parts = key.split(".")
        width = 2 if ".".join(parts[:2]) in MMSEG_NAMES else 1
        module, rest = MMSEG_NAMES[".".join(parts[:width])], parts[width:]
        if len(rest) == 3 and rest[1][:-1] in ("conv", "bn"):  # block index, convN or bnN, parameter
            rest = [rest[0], f"conv{rest[1][-1]}", rest[1][:-1], rest[2]]
        mmseg[".".join([module, *rest])] = value
    return mmseg


def downloaded(served):
    """Where the download of the file ``served`` lands."""
    return pretrained.imagenet_download_path("ddrnet23_slim", served.as_uri())


@pytest.fixture
def served_trunk(slim_official, tmp_path, monkeypatch):
    """ddrnet23_slim's download pointed at a local file in MMSegmentation's layout, named the OpenMMLab
    way (the first 8 hex digits of its SHA-256); the weights cache in ``tmp_path``. Returns the file."""
    monkeypatch.setenv("SEGZOO_WEIGHTS_DIR", str(tmp_path / "cache"))
    server = tmp_path / "server"
    server.mkdir()
    staged = server / "staged.pth"
    torch.save({k: torch.from_numpy(v) for k, v in mmseg_trunk(slim_official).items()}, staged)
    digest = file_digest(staged)
    published = staged.rename(server / f"ddrnet23s-in1kpre_3rdparty-{digest[:8]}.pth")
    monkeypatch.setitem(ddrnet_weights.IMAGENET_DOWNLOADS, "ddrnet23_slim", (published.as_uri(), digest[:8]))
    return published


def test_imagenet_weights_download_once_and_give_the_official_trunk(slim_official, served_trunk, tmp_path):
    assert sorted(ddrnet_weights.IMAGENET_DOWNLOADS) == ["ddrnet23", "ddrnet23_slim"]
    model = presets.from_name("ddrnet23_slim", num_classes=3, weights="imagenet")
    images = random_images(1, 64, 64)
    expected, actual = run_official(slim_official, images), run_segzoo(model, images)
    for key in ("high", "low", "high_stage3"):
        assert_relative_error_below(actual[key], expected[key], what=key)
    assert os.path.isfile(downloaded(served_trunk))
    cached = weights.imagenet_weights_path("ddrnet23_slim")
    assert cached.startswith(str(tmp_path / "cache")) and os.path.isfile(cached)
    # Converted once: without the server and the download, the cache still serves the trunk.
    served_trunk.unlink()
    os.remove(downloaded(served_trunk))
    again = presets.from_name("ddrnet23_slim", num_classes=3, weights="imagenet")
    np.testing.assert_array_equal(run_segzoo(again, images)["high"], actual["high"])


def test_a_download_with_another_checksum_is_deleted_and_refused(served_trunk, monkeypatch):
    monkeypatch.setitem(ddrnet_weights.IMAGENET_DOWNLOADS, "ddrnet23_slim", (served_trunk.as_uri(), "00000000"))
    with pytest.raises(CheckpointError, match="is not the published 00000000") as error:
        presets.from_name("ddrnet23_slim", weights="imagenet")
    assert "was deleted" in str(error.value)
    assert not os.path.exists(downloaded(served_trunk))
    assert not os.path.exists(weights.imagenet_weights_path("ddrnet23_slim"))


def test_offline_says_where_to_put_the_download_and_how_to_train_without_it(served_trunk, monkeypatch):
    unreachable = served_trunk.parent / "unreachable" / served_trunk.name
    monkeypatch.setitem(ddrnet_weights.IMAGENET_DOWNLOADS, "ddrnet23_slim",
                        (unreachable.as_uri(), ddrnet_weights.IMAGENET_DOWNLOADS["ddrnet23_slim"][1]))
    with pytest.raises(errors.DownloadError) as error:
        presets.from_name("ddrnet23_slim", weights="imagenet")
    target = downloaded(served_trunk)
    message = str(error.value)
    assert target in message and "weights='none'" in message and "SEGZOO_WEIGHTS_DIR" in message
    # Put there by hand, the file is checked and converted; nothing is downloaded.
    shutil.copy(served_trunk, target)
    assert presets.from_name("ddrnet23_slim", weights="imagenet").num_classes == 2
    assert os.path.isfile(weights.imagenet_weights_path("ddrnet23_slim"))


def test_mmseg_names_map_onto_every_trunk_parameter(slim_official):
    state = mmseg_trunk(slim_official)
    state["spp.scales.0.1.conv.weight"] = np.zeros((128, 512, 1, 1), "float32")  # another DAPPM layout: not read
    renamed = ddrnet_weights.from_mmseg({"backbone." + k: v for k, v in state.items()})
    official = {k for k in numpy_state(slim_official) if not k.startswith(("spp.", "final_layer.", "seghead_extra."))}
    assert set(renamed) == official
    np.testing.assert_array_equal(renamed["conv1.0.bias"], np.zeros(32, "float32"))


# --- Reading .pth files ----------------------------------------------------------------------

def test_reader_rebuilds_tensors_of_every_dtype_and_layout(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = collections.OrderedDict(
        float32=torch.randn(2, 3), float16=torch.randn(5).half(), float64=torch.randn(3).double(),
        int64=torch.arange(7), int8=torch.tensor([-3, 4], dtype=torch.int8), boolean=torch.tensor([True, False]),
        scalar=torch.tensor(3.5), empty=torch.zeros(0, 3), transposed=base.t(), sliced=base[1:3, 2:5],
        bfloat16=torch.tensor([1.5, -2.0, 3.25], dtype=torch.bfloat16))
    path = tmp_path / "tensors.pth"
    torch.save({"tensors": tensors, "parameter": nn.Parameter(torch.ones(2))}, path)
    loaded = load_torch_checkpoint(path)
    assert isinstance(loaded["tensors"], collections.OrderedDict)
    for key, tensor in tensors.items():
        expected = tensor.float().numpy() if key == "bfloat16" else tensor.numpy()
        assert loaded["tensors"][key].dtype == expected.dtype, key
        np.testing.assert_array_equal(loaded["tensors"][key], expected, err_msg=key)
    np.testing.assert_array_equal(loaded["parameter"], np.ones(2, "float32"))


def write_checkpoint_zip(path, payload, storages=None):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        for key, data in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", data)


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pth"
    write_checkpoint_zip(path, pickle.dumps({"conv1.0.weight": Exploit()}, protocol=2))
    with pytest.raises(CheckpointError, match=r"refusing to load the global '(posix|os|nt)\.system'"):
        load_torch_checkpoint(path)
    with pytest.raises(CheckpointError, match="system"):
        convert_ddrnet(path, "ddrnet23_slim")
    assert not marker.exists()
    write_checkpoint_zip(path, b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(CheckpointError, match="builtins.eval"):
        load_torch_checkpoint(path)


def test_malformed_and_legacy_files_are_refused(tmp_path):
    # A tensor whose strides reach past its storage (4 floats) must not read other memory.
    payload = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
               b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00K\x03K\x03\x86K\x03K\x01\x86\x89)tR.")
    path = tmp_path / "strided.pth"
    write_checkpoint_zip(path, payload, {"0": np.zeros(4, "float32").tobytes()})
    with pytest.raises(CheckpointError, match="reach element 8 of a storage of 4"):
        load_torch_checkpoint(path)
    write_checkpoint_zip(path, payload[:40])
    with pytest.raises(CheckpointError, match="data.pkl is not a readable checkpoint"):
        load_torch_checkpoint(path)
    write_checkpoint_zip(path, payload)
    with pytest.raises(CheckpointError, match="storage archive/data/0 is missing"):
        load_torch_checkpoint(path)
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy"):
        load_torch_checkpoint(legacy)
    not_a_checkpoint = tmp_path / "other.zip"
    with zipfile.ZipFile(not_a_checkpoint, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="data.pkl"):
        load_torch_checkpoint(not_a_checkpoint)


def test_convert_offers_exactly_the_presets_with_official_checkpoints():
    from segzoo.configs import CONVERTIBLE_PRESETS

    assert sorted(CONVERTIBLE_PRESETS) == sorted(weights.OFFICIAL_CHECKPOINTS)
