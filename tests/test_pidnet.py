"""PIDNet: official layout and size, parity with a PyTorch rebuild of the official code, the four
training losses, boundary targets, batch-norm folding, conversion of the authors' checkpoints.

The reference is a PyTorch PIDNet written here from the official code
(github.com/XuJiacong/PIDNet, ``models/pidnet.py``, ``models/model_utils.py``;
own code, official module names), with random weights and random batch-norm
statistics, in eval mode. The harness tests of every preset (build, train,
``.keras`` round trip, JAX and PyTorch backends) are in ``test_presets.py``.
"""

import logging
import os

import keras
import numpy as np
import pytest

from harness import official_input, random_images, random_labels, run_official
from segzoo import losses, presets
from segzoo.backbones import pidnet_weights
from segzoo.files import file_digest
from segzoo.folding import fold_batch_norm
from segzoo.utils import count_params
from segzoo.weights import CheckpointError, convert_pidnet, install_imagenet_weights

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

NAMES = ("pidnet_s", "pidnet_m", "pidnet_l")


# --- The official PIDNet in PyTorch (reference; own code, official module names) ---------------

def up(x, like):
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def conv_bn(cin, cout, k=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout))


def bn_relu_conv(cin, cout, k=1, groups=1, pool=None):
    layers = [pool] if pool is not None else []
    return nn.Sequential(*layers, nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, k, padding=k // 2,
                                                                             groups=groups, bias=False))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None, no_relu=False):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
        self.downsample, self.no_relu = downsample, no_relu

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        out = out + (self.downsample(x) if self.downsample is not None else x)
        return out if self.no_relu else F.relu(out)


class Bottleneck(nn.Module):
    expansion = 2

    def __init__(self, cin, planes, stride=1, downsample=None, no_relu=True):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, planes * 2, 1, bias=False), nn.BatchNorm2d(planes * 2)
        self.downsample, self.no_relu = downsample, no_relu

    def forward(self, x):
        out = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        out = self.bn3(self.conv3(out)) + (self.downsample(x) if self.downsample is not None else x)
        return out if self.no_relu else F.relu(out)


def make_layer(block, cin, planes, blocks, stride=1):
    downsample = None
    if stride != 1 or cin != planes * block.expansion:
        downsample = nn.Sequential(nn.Conv2d(cin, planes * block.expansion, 1, stride, bias=False),
                                   nn.BatchNorm2d(planes * block.expansion))
    layers = [block(cin, planes, stride, downsample)]  # the first block keeps its default no_relu
    for i in range(1, blocks):
        layers.append(block(planes * block.expansion, planes, 1, no_relu=i == blocks - 1))
    return nn.Sequential(*layers)


def single_layer(block, cin, planes):
    downsample = None
    if cin != planes * block.expansion:
        downsample = nn.Sequential(nn.Conv2d(cin, planes * block.expansion, 1, bias=False),
                                   nn.BatchNorm2d(planes * block.expansion))
    return block(cin, planes, 1, downsample, no_relu=True)


class SegmentHead(nn.Module):
    def __init__(self, cin, mid, cout):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, mid, 3, padding=1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(mid), nn.Conv2d(mid, cout, 1, bias=True)

    def forward(self, x):
        return self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))


def pools():
    return [nn.AvgPool2d(5, 2, 2), nn.AvgPool2d(9, 4, 4), nn.AvgPool2d(17, 8, 8), nn.AdaptiveAvgPool2d(1)]


class DAPPM(nn.Module):
    def __init__(self, cin, branch, cout):
        super().__init__()
        for i, pool in enumerate(pools(), start=1):
            setattr(self, f"scale{i}", bn_relu_conv(cin, branch, pool=pool))
            setattr(self, f"process{i}", bn_relu_conv(branch, branch, 3))
        self.scale0 = bn_relu_conv(cin, branch)
        self.compression, self.shortcut = bn_relu_conv(branch * 5, cout), bn_relu_conv(cin, cout)

    def forward(self, x):
        outs = [self.scale0(x)]
        for i in range(1, 5):
            outs.append(getattr(self, f"process{i}")(up(getattr(self, f"scale{i}")(x), x) + outs[-1]))
        return self.compression(torch.cat(outs, 1)) + self.shortcut(x)


class PAPPM(nn.Module):
    def __init__(self, cin, branch, cout):
        super().__init__()
        for i, pool in enumerate(pools(), start=1):
            setattr(self, f"scale{i}", bn_relu_conv(cin, branch, pool=pool))
        self.scale0 = bn_relu_conv(cin, branch)
        self.scale_process = bn_relu_conv(branch * 4, branch * 4, 3, groups=4)
        self.compression, self.shortcut = bn_relu_conv(branch * 5, cout), bn_relu_conv(cin, cout)

    def forward(self, x):
        base = self.scale0(x)
        scales = [up(getattr(self, f"scale{i}")(x), x) + base for i in range(1, 5)]
        out = torch.cat([base, self.scale_process(torch.cat(scales, 1))], 1)
        return self.compression(out) + self.shortcut(x)


class PagFM(nn.Module):
    def __init__(self, cin, mid):
        super().__init__()
        self.f_x, self.f_y = conv_bn(cin, mid), conv_bn(cin, mid)

    def forward(self, x, y):
        sim = torch.sigmoid(torch.sum(self.f_x(x) * up(self.f_y(y), x), dim=1, keepdim=True))
        return (1 - sim) * x + sim * up(y, x)


class LightBag(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv_p, self.conv_i = conv_bn(cin, cout), conv_bn(cin, cout)

    def forward(self, p, i, d):
        a = torch.sigmoid(d)
        return self.conv_p((1 - a) * i + p) + self.conv_i(i + a * p)


class Bag(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = bn_relu_conv(cin, cout, 3)

    def forward(self, p, i, d):
        a = torch.sigmoid(d)
        return self.conv(a * p + (1 - a) * i)


class PIDNet(nn.Module):
    def __init__(self, m=2, n=3, num_classes=19, planes=64, ppm_planes=96, head_planes=128, augment=True):
        super().__init__()
        p, self.augment = planes, augment
        self.conv1 = nn.Sequential(nn.Conv2d(3, p, 3, 2, 1), nn.BatchNorm2d(p), nn.ReLU(),
                                   nn.Conv2d(p, p, 3, 2, 1), nn.BatchNorm2d(p), nn.ReLU())
        self.layer1 = make_layer(BasicBlock, p, p, m)
        self.layer2 = make_layer(BasicBlock, p, 2 * p, m, 2)
        self.layer3 = make_layer(BasicBlock, 2 * p, 4 * p, n, 2)
        self.layer4 = make_layer(BasicBlock, 4 * p, 8 * p, n, 2)
        self.layer5 = make_layer(Bottleneck, 8 * p, 8 * p, 2, 2)
        self.compression3, self.compression4 = conv_bn(4 * p, 2 * p), conv_bn(8 * p, 2 * p)
        self.pag3, self.pag4 = PagFM(2 * p, p), PagFM(2 * p, p)
        self.layer3_ = make_layer(BasicBlock, 2 * p, 2 * p, m)
        self.layer4_ = make_layer(BasicBlock, 2 * p, 2 * p, m)
        self.layer5_ = make_layer(Bottleneck, 2 * p, 2 * p, 1)
        if m == 2:
            self.layer3_d = single_layer(BasicBlock, 2 * p, p)
            self.layer4_d = make_layer(Bottleneck, p, p, 1)
            self.diff3, self.diff4 = conv_bn(4 * p, p, 3), conv_bn(8 * p, 2 * p, 3)
            self.spp, self.dfm = PAPPM(16 * p, ppm_planes, 4 * p), LightBag(4 * p, 4 * p)
        else:
            self.layer3_d = single_layer(BasicBlock, 2 * p, 2 * p)
            self.layer4_d = single_layer(BasicBlock, 2 * p, 2 * p)
            self.diff3, self.diff4 = conv_bn(4 * p, 2 * p, 3), conv_bn(8 * p, 2 * p, 3)
            self.spp, self.dfm = DAPPM(16 * p, ppm_planes, 4 * p), Bag(4 * p, 4 * p)
        self.layer5_d = make_layer(Bottleneck, 2 * p, 2 * p, 1)
        if augment:
            self.seghead_p = SegmentHead(2 * p, head_planes, num_classes)
            self.seghead_d = SegmentHead(2 * p, p, 1)
        self.final_layer = SegmentHead(4 * p, head_planes, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(self.layer2(F.relu(self.layer1(x))))
        x_, x_d = self.layer3_(x), self.layer3_d(x)
        x = F.relu(self.layer3(x))
        x_ = self.pag3(x_, self.compression3(x))
        x_d = x_d + up(self.diff3(x), x_d)
        temp_p = x_
        x = F.relu(self.layer4(x))
        x_, x_d = self.layer4_(F.relu(x_)), self.layer4_d(F.relu(x_d))
        x_ = self.pag4(x_, self.compression4(x))
        x_d = x_d + up(self.diff4(x), x_d)
        temp_d = x_d
        x_, x_d = self.layer5_(F.relu(x_)), self.layer5_d(F.relu(x_d))
        x = up(self.spp(self.layer5(x)), x_)
        out = self.final_layer(self.dfm(x_, x, x_d))
        if self.augment:
            return {"aux_logits": self.seghead_p(temp_p), "logits": out, "boundary_logits": self.seghead_d(temp_d)}
        return out


#: The official get_seg_model / get_pred_model arguments.
TORCH_CONFIGS = {"pidnet_s": dict(m=2, n=3, planes=32, ppm_planes=96, head_planes=128),
                 "pidnet_m": dict(m=2, n=3, planes=64, ppm_planes=96, head_planes=128),
                 "pidnet_l": dict(m=3, n=4, planes=64, ppm_planes=112, head_planes=256)}


def official_model(name, num_classes=19, augment=True, seed=0):
    """The official architecture with random weights and random batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = PIDNet(num_classes=num_classes, augment=augment, **TORCH_CONFIGS[name])
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):  # fan-in scaling keeps activations O(1) through the depth
                nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.0)
                module.bias.normal_(0.0, 0.2)
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def run_segzoo(model, images):
    features = model.backbone(images, training=False)
    outputs = {"logits": model.head(features, training=False), "aux_logits": model.aux_head(features),
               "boundary_logits": model.boundary_head(features), "upsampled": model(images, training=False)}
    return {key: keras.ops.convert_to_numpy(value) for key, value in outputs.items()}


def relative_error(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


# --- Size ------------------------------------------------------------------------------------

def _torch_counts(module):
    """(parameters, parameters + batch-norm running statistics) of a PyTorch module."""
    parameters = sum(p.numel() for p in module.parameters())
    statistics = sum(b.numel() for name, b in module.named_buffers() if name.endswith(("running_mean", "running_var")))
    return parameters, parameters + statistics


@pytest.mark.parametrize("name", NAMES)
def test_parameters_equal_the_official_prediction_model(name):
    official, with_statistics = _torch_counts(PIDNet(num_classes=19, augment=False, **TORCH_CONFIGS[name]))
    model = presets.from_name(name, num_classes=19)
    # Keras counts the batch norms' moving statistics too; PyTorch keeps them as buffers.
    assert count_params(model) == with_statistics
    assert count_params(model) == pytest.approx(official, rel=0.005)
    assert model.count_params() == _torch_counts(PIDNet(num_classes=19, **TORCH_CONFIGS[name]))[1]


# --- Parity with the official code, through the authors' checkpoint layout -------------------

@pytest.mark.parametrize("name", NAMES)
def test_official_checkpoint_matches_pytorch(name, tmp_path):
    reference = official_model(name)
    path = tmp_path / f"{name}.pt"  # as FullModel saves it: a "model." prefix, the criterion's buffers
    state = {"model." + k: v for k, v in reference.state_dict().items()}
    state["loss.sem_loss.criterion.weight"] = torch.ones(19)
    torch.save(state, path)
    model = convert_pidnet(path, name)
    assert model.num_classes == 19
    images = random_images(2, 64, 128, seed=1)
    expected, actual = run_official(reference, images), run_segzoo(model, images)
    for key in ("logits", "aux_logits", "boundary_logits", "upsampled"):
        assert actual[key].shape == expected[key].shape, key
        assert relative_error(actual[key], expected[key]) < 1e-3, (key, relative_error(actual[key], expected[key]))
    agreement = np.mean(actual["upsampled"].argmax(-1) == expected["upsampled"].argmax(-1))
    assert agreement >= 0.999, agreement


def test_imagenet_trunk_and_mismatches(tmp_path, monkeypatch, caplog):
    reference = official_model("pidnet_s", num_classes=5)
    trunk = {k: v.numpy() for k, v in reference.state_dict().items()
             if not k.startswith(("spp.", "dfm.", "final_layer.", "seghead_"))}
    with pytest.raises(CheckpointError, match="num_classes"):
        convert_pidnet(trunk, "pidnet_s")
    trunk["linear.weight"] = np.zeros((1000, 256), "float32")  # an ImageNet classifier: ignored and logged
    monkeypatch.setenv("SEGZOO_WEIGHTS_DIR", str(tmp_path))
    with caplog.at_level(logging.INFO, logger="segzoo.weights"):
        install_imagenet_weights({"state_dict": trunk}, "pidnet_s")
    assert "linear.weight" in caplog.text and "spp and dfm and final_layer" in caplog.text
    model = presets.from_name("pidnet_s", num_classes=3, weights="imagenet")
    assert_p_branch_matches(model, reference)
    bad = dict(trunk, **{"layer1.0.conv1.weight": np.zeros((1, 1, 3, 3), "float32")})
    with pytest.raises(CheckpointError, match=r"layer1.0.conv1.weight: checkpoint \(1, 1, 3, 3\)"):
        convert_pidnet(bad, "pidnet_s", num_classes=3)
    with pytest.raises(ValueError, match="pidnet_s"):
        convert_pidnet(trunk, "ddrnet23_slim", num_classes=3)


#: The authors' module -> MMSegmentation's (mmseg/models/backbones/pidnet.py), written out here by hand.
MMSEG_NAMES = {"conv1.0": "stem.0.conv", "conv1.1": "stem.0.bn", "conv1.3": "stem.1.conv", "conv1.4": "stem.1.bn",
               "layer1": "stem.2", "layer2": "stem.4", "layer3": "i_branch_layers.0", "layer4": "i_branch_layers.1",
               "layer5": "i_branch_layers.2", "layer3_": "p_branch_layers.0", "layer4_": "p_branch_layers.1",
               "layer5_": "p_branch_layers.2", "compression3.0": "compression_1.conv",
               "compression3.1": "compression_1.bn", "compression4.0": "compression_2.conv",
               "compression4.1": "compression_2.bn", "pag3.f_x.0": "pag_1.f_p.conv", "pag3.f_x.1": "pag_1.f_p.bn",
               "pag3.f_y.0": "pag_1.f_i.conv", "pag3.f_y.1": "pag_1.f_i.bn", "pag4.f_x.0": "pag_2.f_p.conv",
               "pag4.f_x.1": "pag_2.f_p.bn", "pag4.f_y.0": "pag_2.f_i.conv", "pag4.f_y.1": "pag_2.f_i.bn"}
BLOCK_PARTS = {"conv1": ["conv1", "conv"], "bn1": ["conv1", "bn"], "conv2": ["conv2", "conv"], "bn2": ["conv2", "bn"],
               "conv3": ["conv3", "conv"], "bn3": ["conv3", "bn"]}


def mmseg_trunk(reference):
    """What MMSegmentation's PIDNet ImageNet files hold, in its names: the stem and the I and P branches
    (no D branch, no heads), ConvModules as ``.conv``/``.bn``, block shortcuts as ConvModules."""
    mmseg = {}
    for key, value in reference.state_dict().items():
        parts = key.split(".")
        width = next((w for w in (3, 2, 1) if ".".join(parts[:w]) in MMSEG_NAMES), None)
        if width is None:
            continue  # the D branch and the heads
        rest = parts[width:]
        if len(rest) == 3 and rest[1] in BLOCK_PARTS:  # block index, convN or bnN, parameter
            rest = [rest[0], *BLOCK_PARTS[rest[1]], rest[2]]
        elif len(rest) == 4 and rest[1] == "downsample":
            rest = [rest[0], "downsample", ("conv", "bn")[int(rest[2])], rest[3]]
        mmseg[".".join([MMSEG_NAMES[".".join(parts[:width])], *rest])] = value.numpy()
    return mmseg


def test_mmseg_imagenet_trunk_downloads_with_the_d_branch_left_at_initialisation(tmp_path, monkeypatch, caplog):
    assert sorted(pidnet_weights.IMAGENET_DOWNLOADS) == ["pidnet_l", "pidnet_m", "pidnet_s"]
    reference = official_model("pidnet_s", num_classes=5)
    state = mmseg_trunk(reference)
    # The published pidnet-s_imagenet1k file holds 302 tensors of 6,456,274 values: this layout.
    assert len(state) == 302 and sum(v.size for v in state.values()) == 6456274
    served = tmp_path / "pidnet-s_imagenet1k.pth"
    torch.save({"backbone." + k: torch.from_numpy(v) for k, v in state.items()}, served)
    monkeypatch.setitem(pidnet_weights.IMAGENET_DOWNLOADS, "pidnet_s", (served.as_uri(), file_digest(served)))
    monkeypatch.setenv("SEGZOO_WEIGHTS_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="segzoo.weights"):
        model = presets.from_name("pidnet_s", num_classes=3, weights="imagenet")
    assert "layer3_d and layer4_d and layer5_d and diff3 and diff4 not in the checkpoint" in caplog.text
    assert os.path.isfile(tmp_path / "cache" / "pidnet_s_imagenet.weights.h5")
    assert_p_branch_matches(model, reference)
    del state["pag_1.f_i.bn.running_var"]
    with pytest.raises(CheckpointError, match=r"pag3.f_y.1.running_var.*MMSegmentation PIDNet trunk"):
        convert_pidnet(state, "pidnet_s", num_classes=3)


def assert_p_branch_matches(model, reference):
    """The trunk's P-branch output (stride 8) equals the official model's: the trunk was loaded."""
    images = random_images(1, 64, 64)
    x = official_input(images)
    with torch.no_grad():
        expected = reference.layer5_(F.relu(reference.pag4(*_p_branch(reference, x))))
    actual = keras.ops.convert_to_numpy(model.backbone(images)["p"])
    assert relative_error(actual, expected.numpy().transpose(0, 2, 3, 1)) < 1e-4


def _p_branch(model, x):
    """The P branch and compression4 of the I branch before pag4 (official forward, up to there)."""
    x = F.relu(model.layer2(F.relu(model.layer1(model.conv1(x)))))
    x_ = model.layer3_(x)
    x = F.relu(model.layer3(x))
    x_ = model.pag3(x_, model.compression3(x))
    x = F.relu(model.layer4(x))
    return model.layer4_(F.relu(x_)), model.compression4(x)


# --- Training: the four losses and the boundary targets -----------------------------------

def test_boundary_targets_of_a_tiny_label():
    labels = np.zeros((1, 16, 16), "int32")
    labels[:, :, 8:] = 2  # one vertical change of class between columns 7 and 8
    edges = keras.ops.convert_to_numpy(losses.boundary_targets(labels, edge_size=4, border=2))
    # The line is on column 7 (the last pixel before the change), rows 2..13 (a 2-pixel frame is
    # dropped); dilating by 4x4 reads source offsets -1..+2: columns 5..8, rows 0..14.
    expected = np.zeros((16, 16), "float32")
    expected[0:15, 5:9] = 1.0
    np.testing.assert_array_equal(edges[0], expected)
    transposed = keras.ops.convert_to_numpy(losses.boundary_targets(labels.transpose(0, 2, 1)[..., None],
                                                                    edge_size=4, border=2))
    np.testing.assert_array_equal(transposed[0], expected.T)
    no_edges = keras.ops.convert_to_numpy(losses.boundary_targets(np.ones((1, 16, 16), "int32")))
    assert not no_edges.any()


def test_each_loss_term_is_nonzero_and_training_moves_the_weights():
    model = presets.from_name("pidnet_s", num_classes=3, input_shape=(64, 64, 3))
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=losses.CrossEntropy(ohem_threshold=0.9, ohem_min_kept=1000))
    images = random_images(2, 64, 64)
    labels = np.zeros((2, 64, 64), "int32")
    labels[:, 20:44, 16:48] = 1
    labels[:, 30:40, 24:40] = 2
    outputs = model(images, training=True)
    assert set(outputs) == {"logits", "aux_logits", "boundary_logits"}
    # A confident boundary head somewhere, so that the boundary-awareness term has pixels.
    outputs["boundary_logits"] = outputs["boundary_logits"] * 0 + 5.0
    terms = {k: float(v) for k, v in model.training_loss_terms(labels, outputs).items()}
    assert set(terms) == {"aux/cross_entropy", "boundary/boundary_bce", "boundary/boundary_awareness"}
    assert all(value > 0 for value in terms.values()), terms
    semantic = float(model.compute_loss(images, labels, outputs["logits"]))
    total = float(model.compute_loss(images, labels, outputs))
    np.testing.assert_allclose(total, semantic + sum(terms.values()), rtol=1e-5)
    assert semantic > 0
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.boundary_head.trainable_weights]
    assert np.isfinite(model.train_on_batch(images, labels))
    after = [keras.ops.convert_to_numpy(w) for w in model.boundary_head.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_boundary_loss_matches_the_official_weighted_bce():
    rng = np.random.default_rng(0)
    labels = np.zeros((2, 32, 32), "int32")
    labels[:, 10:20, 8:24] = 1
    logits = rng.normal(size=(2, 32, 32, 1)).astype("float32")
    targets = keras.ops.convert_to_numpy(losses.boundary_targets(labels))
    t = torch.from_numpy(targets.reshape(1, -1))
    pos, neg = (t == 1).sum(), (t == 0).sum()
    weight = torch.where(t == 1, neg / (pos + neg), pos / (pos + neg))
    expected = F.binary_cross_entropy_with_logits(torch.from_numpy(logits.reshape(1, -1)), t, weight)
    np.testing.assert_allclose(float(losses.BoundaryLoss()(labels, logits)), float(expected), rtol=1e-5)


# --- Folding, serialisation --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["pidnet_s"])
def test_folded_model_gives_the_same_logits(name):
    reference = official_model(name, num_classes=3)
    model = convert_pidnet({k: v.numpy() for k, v in reference.state_dict().items()}, name)
    images = random_images(1, 64, 64)
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    folded = fold_batch_norm(model)
    assert folded.folded_batch_norms > 0
    np.testing.assert_allclose(keras.ops.convert_to_numpy(folded(images, training=False)), expected,
                               rtol=0, atol=1e-4 * np.abs(expected).max())


def test_config_keeps_the_training_heads_and_their_losses(tmp_path):
    model = presets.from_name("pidnet_s", num_classes=3, input_shape=(64, 64, 3), boundary_loss_weight=10.0)
    model.compile(loss=losses.CrossEntropy())
    path = str(tmp_path / "pidnet.keras")
    model.save(path)
    from segzoo.models import load_model

    loaded = load_model(path)
    heads = loaded.training_heads
    assert set(heads) == {"aux", "boundary"}
    assert [w for _, w in heads["boundary"].losses] == [10.0, 1.0]
    assert isinstance(heads["boundary"].losses[1][0], losses.BoundaryAwarenessLoss)
    assert heads["boundary"].losses[1][0].semantic_loss.ohem_threshold == 0.9
    images = random_images(1, 64, 64)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(images)),
                               keras.ops.convert_to_numpy(model(images)), atol=1e-5)
    assert count_params(loaded) == count_params(model)


def test_training_heads_can_be_switched_off():
    model = presets.from_name("pidnet_s", num_classes=2, aux_loss_weight=0.0, boundary_loss_weight=0.0,
                              boundary_awareness_weight=0.0)
    assert not isinstance(model(random_images(1, 64, 64), training=True), dict)
    outputs = presets.from_name("pidnet_s", num_classes=2, aux_loss_weight=0.0)(random_images(1, 64, 64),
                                                                                training=True)
    assert set(outputs) == {"logits", "boundary_logits"}
    labels = random_labels(1, 64, 64, 2)
    assert labels.shape == (1, 64, 64)
