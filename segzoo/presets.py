"""The registry of named models: ``from_name``, ``list_presets``, ``get_preset``.

Every named model of the zoo is one :class:`Preset` entry below: a builder that
assembles a backbone and a head into a :class:`segzoo.models.SegmentationModel`,
with what it is, its size and its cost. ``python -m segzoo.presets`` prints the
table that the README shows.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from typing import Callable

#: Resolution (height, width) and class count at which presets report their cost.
REPORT_SHAPE = (480, 640, 3)
REPORT_CLASSES = 2


@dataclasses.dataclass(frozen=True)
class Preset:
    """One named model.

    Attributes:
        name: registry key, e.g. ``"ddrnet23_slim"``.
        title: the model's usual name, e.g. ``"DDRNet-23-slim"``.
        description: one sentence on what it is.
        build: ``build(num_classes, input_shape, weights, **overrides)`` returning a
            :class:`~segzoo.models.SegmentationModel`; ``weights`` is ``None`` or
            ``"imagenet"`` (pretrained backbone).
        params: parameters at inference (no auxiliary head) with ``REPORT_CLASSES`` classes.
        gmacs: multiply-adds (10^9) of one ``REPORT_SHAPE`` image, see
            :func:`segzoo.utils.count_flops`.
        source: the paper or code it follows.
    """

    name: str
    title: str
    description: str
    build: Callable
    params: int
    gmacs: float
    source: str

    def summary(self) -> str:
        """One line: title, description, size and cost."""
        height, width, _ = REPORT_SHAPE
        return (f"{self.title}: {self.description} {self.params / 1e6:.2f} M parameters, "
                f"{self.gmacs:.2f} GFLOPs (multiply-adds) at {width}x{height}. Source: {self.source}.")


_PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    """Add ``preset`` to the registry (names are unique)."""
    if preset.name in _PRESETS:
        raise ValueError(f"A preset named {preset.name!r} is already registered.")
    _PRESETS[preset.name] = preset
    return preset


def list_presets() -> list[str]:
    """Names of every registered preset, sorted."""
    return sorted(_PRESETS)


def get_preset(name: str) -> Preset:
    """The :class:`Preset` called ``name``; an unknown name lists the valid ones and the closest."""
    if name not in _PRESETS:
        close = difflib.get_close_matches(name, _PRESETS, n=1, cutoff=0.0)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown preset {name!r}.{hint} Valid names: {', '.join(list_presets())}.")
    return _PRESETS[name]


def from_name(name, num_classes=REPORT_CLASSES, input_shape=(None, None, 3), weights=None, **overrides):
    """Build the named model.

    Args:
        name: a name from :func:`list_presets`.
        num_classes: output channels: 1 for binary segmentation with a sigmoid,
            otherwise the number of classes, background included (softmax).
        input_shape: ``(H, W, 3)``; ``None`` for sizes chosen at run time.
            Heights and widths must be multiples of ``model.size_divisor``.
        weights: ``None`` (random initialisation), ``"imagenet"`` (ImageNet-pretrained
            backbone, downloaded and cached on first use; DDRNet and PIDNet presets
            convert the downloaded checkpoint once, ``ddrnet39`` needs the authors' file
            converted by hand, see :mod:`segzoo.weights`), or the path of a
            ``.weights.h5`` file saved from the same preset and ``num_classes``.
        **overrides: constructor arguments of the preset's head (and
            ``aux_loss_weight``), to vary a preset without writing a new one.

    Returns:
        A :class:`segzoo.models.SegmentationModel`.
    """
    preset = get_preset(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1 (1 means binary with a sigmoid); got {num_classes}.")
    weights_file = None
    if weights not in (None, "imagenet"):
        weights_file = os.fspath(weights)
        if not weights_file.endswith(".weights.h5") or not os.path.isfile(weights_file):
            raise ValueError(
                f"weights must be None, 'imagenet' or an existing .weights.h5 file; got {weights!r}.")
    model = preset.build(num_classes=num_classes, input_shape=tuple(input_shape),
                         weights=None if weights_file else weights, **overrides)
    if weights_file:
        model.load_weights(weights_file)
    return model


def _ddrnet_builder(variant, head_channels):
    """The ``build`` function of a DDRNet preset: trunk, DDRNetHead, auxiliary head (training only)."""

    def build(num_classes, input_shape, weights, aux_loss_weight=0.4, **head_overrides):
        from segzoo.backbones.ddrnet import DDRNET_VARIANTS, DDRNetBackbone
        from segzoo.heads.ddrnet import DDRNetHead, DDRNetSegmentHead
        from segzoo.models import SegmentationModel

        head_args = {"dappm_channels": 128, "head_channels": head_channels, **head_overrides}
        backbone = DDRNetBackbone(**DDRNET_VARIANTS[variant], input_shape=input_shape,
                                  name=f"{variant}_backbone")
        head = DDRNetHead(num_classes, **head_args, name="head")
        aux_head = DDRNetSegmentHead(num_classes, head_args["head_channels"], feature_key="high_stage3",
                                     name="aux_head")
        model = SegmentationModel(backbone, head, aux_head=aux_head, aux_loss_weight=aux_loss_weight, name=variant)
        if weights == "imagenet":  # downloaded and converted once, then cached
            from segzoo.backbones import ddrnet_weights
            from segzoo.backbones.pretrained import load_imagenet_weights

            load_imagenet_weights(model, variant, ddrnet_weights)
        return model

    return build


_DDRNET_SOURCE = "Hong et al. 2021 (arXiv 2101.06085), official code github.com/ydhongHIT/DDRNet"

register_preset(Preset(
    name="ddrnet23_slim", title="DDRNet-23-slim",
    description="dual-resolution network (high branch 64 channels at stride 8, context branch "
                "to stride 64 with DAPPM), the fastest DDRNet; training-only auxiliary head.",
    build=_ddrnet_builder("ddrnet23_slim", head_channels=64),
    params=5714722, gmacs=5.318, source=_DDRNET_SOURCE))

register_preset(Preset(
    name="ddrnet23", title="DDRNet-23",
    description="DDRNet-23-slim with twice the channels (high branch 128); training-only auxiliary head.",
    build=_ddrnet_builder("ddrnet23", head_channels=128),
    params=20184130, gmacs=20.969, source=_DDRNET_SOURCE))

register_preset(Preset(
    name="ddrnet39", title="DDRNet-39",
    description="deeper DDRNet (blocks 3-4-6-3, stage 3 split with two bilateral fusions), "
                "the most accurate; training-only auxiliary head.",
    build=_ddrnet_builder("ddrnet39", head_channels=256),
    params=32404290, gmacs=41.182, source=_DDRNET_SOURCE))


def _pidnet_builder(variant, ppm_channels, head_channels, ppm, fusion):
    """The ``build`` function of a PIDNet preset: trunk, PIDNetHead, auxiliary and boundary heads.

    The training-only heads and their losses follow the paper (official
    ``FullModel``): the auxiliary head (P branch, official ``seghead_p``) with
    plain cross-entropy, weight ``aux_loss_weight`` (0.4); the boundary head
    (D branch, ``seghead_d``) with :class:`segzoo.losses.BoundaryLoss`, weight
    ``boundary_loss_weight`` (20), and :class:`segzoo.losses.BoundaryAwarenessLoss`
    (OHEM cross-entropy on the final logits where the boundary is confident),
    weight ``boundary_awareness_weight`` (1). The final logits take the
    compiled loss (the paper: OHEM cross-entropy, weight 1). A binary model
    (``num_classes=1``) uses binary cross-entropy in place of cross-entropy.
    """

    def build(num_classes, input_shape, weights, aux_loss_weight=0.4, boundary_loss_weight=20.0,
              boundary_awareness_weight=1.0, **head_overrides):
        from segzoo.backbones.pidnet import PIDNET_VARIANTS, PIDNetBackbone
        from segzoo.heads.ddrnet import DDRNetSegmentHead
        from segzoo.heads.pidnet import PIDNetHead
        from segzoo.losses import BinaryCrossEntropy, BoundaryAwarenessLoss, BoundaryLoss, CrossEntropy
        from segzoo.models import SegmentationModel, TrainingHead

        head_args = {"ppm_channels": ppm_channels, "head_channels": head_channels, "ppm": ppm,
                     "fusion": fusion, **head_overrides}
        backbone = PIDNetBackbone(**PIDNET_VARIANTS[variant], input_shape=input_shape,
                                  name=f"{variant}_backbone")
        head = PIDNetHead(num_classes, **head_args, name="head")
        planes = PIDNET_VARIANTS[variant]["planes"]
        aux_head = DDRNetSegmentHead(num_classes, head_args["head_channels"], feature_key="p_stage3",
                                     name="seghead_p")
        boundary_head = DDRNetSegmentHead(1, planes, feature_key="d_stage4", name="seghead_d")
        if num_classes == 1:
            plain, semantic = BinaryCrossEntropy(), BinaryCrossEntropy()
        else:
            plain, semantic = CrossEntropy(), CrossEntropy(ohem_threshold=0.9, ohem_min_kept=131072)
        training_heads = {
            "aux": TrainingHead(aux_head, [(plain, aux_loss_weight)]),
            "boundary": TrainingHead(boundary_head, [(BoundaryLoss(), boundary_loss_weight),
                                                     (BoundaryAwarenessLoss(semantic), boundary_awareness_weight)]),
        }
        model = SegmentationModel(backbone, head, training_heads=training_heads, name=variant)
        if weights == "imagenet":  # downloaded and converted once, then cached
            from segzoo.backbones import pidnet_weights
            from segzoo.backbones.pretrained import load_imagenet_weights

            load_imagenet_weights(model, variant, pidnet_weights)
        return model

    return build


_PIDNET_SOURCE = "Xu et al. 2023 (arXiv 2206.02066), official code github.com/XuJiacong/PIDNet"

register_preset(Preset(
    name="pidnet_s", title="PIDNet-S",
    description="three-branch network (DDRNet's dual resolution plus a boundary branch; PAPPM, "
                "Light-Bag fusion), the fastest PIDNet; training-only auxiliary and boundary heads.",
    build=_pidnet_builder("pidnet_s", ppm_channels=96, head_channels=128, ppm="pappm", fusion="light_bag"),
    params=7647778, gmacs=6.914, source=_PIDNET_SOURCE))

register_preset(Preset(
    name="pidnet_m", title="PIDNet-M",
    description="PIDNet-S with twice the channels (planes 64); training-only auxiliary and boundary heads.",
    build=_pidnet_builder("pidnet_m", ppm_channels=96, head_channels=128, ppm="pappm", fusion="light_bag"),
    params=28582850, gmacs=26.004, source=_PIDNET_SOURCE))

register_preset(Preset(
    name="pidnet_l", title="PIDNet-L",
    description="deeper PIDNet (m=3, n=4, planes 64; DAPPM, Bag fusion, head 256), the most accurate; "
                "training-only auxiliary and boundary heads.",
    build=_pidnet_builder("pidnet_l", ppm_channels=112, head_channels=256, ppm="dappm", fusion="bag"),
    params=36986626, gmacs=40.292, source=_PIDNET_SOURCE))


def markdown_table() -> str:
    """The preset table of the README, as markdown."""
    height, width, _ = REPORT_SHAPE
    rows = ["| preset | model | parameters | GFLOPs at {}x{} | source |".format(width, height),
            "|---|---|---|---|---|"]
    for name in list_presets():
        p = _PRESETS[name]
        rows.append(f"| `{name}` | {p.title}: {p.description} | {p.params / 1e6:.2f} M "
                    f"| {p.gmacs:.2f} | {p.source} |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------
# DeepLabV3+ (Chen et al. 2018) on keras.applications backbones.
# ASPP reads P5 (stride 32: keras.applications cannot dilate the last stage)
# at rates (3, 6, 9), the paper's (6, 12, 18) at stride 16 in image pixels;
# the decoder's skip is P2 (stride 4). See segzoo.heads.deeplabv3plus.
# ---------------------------------------------------------------------------

def _efficientnet_backbone(variant, **kwargs):
    from segzoo.backbones.efficientnet import EfficientNetBackbone
    return EfficientNetBackbone(variant, **kwargs)


def _mobilenetv3_backbone(variant, **kwargs):
    from segzoo.backbones.mobilenetv3 import MobileNetV3Backbone
    return MobileNetV3Backbone(variant, **kwargs)


def _deeplabv3plus_builder(name, backbone, variant, **head_args):
    """A preset builder: ``backbone(variant, input_shape=, weights=)`` + a DeepLabV3+ head.

    The head gets ``head_args`` updated with the builder's ``**overrides``
    (``aux_loss_weight`` goes to the model, which has no auxiliary head here).
    """

    def build(num_classes, input_shape=(None, None, 3), weights=None, **overrides):
        from segzoo.heads.deeplabv3plus import DeepLabV3PlusHead
        from segzoo.models import SegmentationModel

        model_args = {}
        if "aux_loss_weight" in overrides:
            model_args["aux_loss_weight"] = overrides.pop("aux_loss_weight")
        head = DeepLabV3PlusHead(num_classes, **{**head_args, **overrides})
        return SegmentationModel(backbone(variant, input_shape=input_shape, weights=weights),
                                 head, name=name, **model_args)

    return build


register_preset(Preset(
    name="deeplabv3plus_efficientnetv2s",
    title="Eff-DeepLabV3+",
    description=("DeepLabV3+ on EfficientNetV2-S (ImageNet weights available): separable ASPP "
                 "(256 channels, rates 3/6/9 at stride 32) and decoder (48-channel stride-4 skip, "
                 "256 channels), swish; the original project's model."),
    build=_deeplabv3plus_builder("deeplabv3plus_efficientnetv2s",
                                 _efficientnet_backbone, "v2s",
                                 aspp_channels=256, decoder_channels=256, separable=True,
                                 activation="swish"),
    params=20_825_746,
    gmacs=20.406,
    source="Chen et al. 2018 (arXiv 1802.02611); keras.applications EfficientNetV2S",
))

register_preset(Preset(
    name="deeplabv3plus_efficientnetb0_lite",
    title="Eff-DeepLabV3+ light-weight",
    description=("DeepLabV3+ on EfficientNet-B0 (ImageNet weights available) with a narrow "
                 "separable head: ASPP and decoder of 128 channels, swish."),
    build=_deeplabv3plus_builder("deeplabv3plus_efficientnetb0_lite",
                                 _efficientnet_backbone, "b0",
                                 aspp_channels=128, decoder_channels=128, separable=True,
                                 activation="swish"),
    params=3_982_613,
    gmacs=3.131,
    source="Chen et al. 2018 (arXiv 1802.02611); keras.applications EfficientNetB0",
))

register_preset(Preset(
    name="deeplabv3plus_mobilenetv3large",
    title="MobileNetV3-Large-DeepLabV3+",
    description=("DeepLabV3+ on MobileNetV3-Large (ImageNet weights available) with a narrow "
                 "separable head: ASPP and decoder of 128 channels, ReLU."),
    build=_deeplabv3plus_builder("deeplabv3plus_mobilenetv3large",
                                 _mobilenetv3_backbone, "large",
                                 aspp_channels=128, decoder_channels=128, separable=True),
    params=3_778_674,
    gmacs=2.310,
    source=("Chen et al. 2018 (arXiv 1802.02611); Howard et al. 2019; "
            "keras.applications MobileNetV3Large"),
))

register_preset(Preset(
    name="deeplabv3plus_mobilenetv3small",
    title="MobileNetV3-Small-DeepLabV3+",
    description=("DeepLabV3+ on MobileNetV3-Small (ImageNet weights available) with a narrow "
                 "separable head: ASPP and decoder of 128 channels, ReLU."),
    build=_deeplabv3plus_builder("deeplabv3plus_mobilenetv3small",
                                 _mobilenetv3_backbone, "small",
                                 aspp_channels=128, decoder_channels=128, separable=True),
    params=1_460_322,
    gmacs=1.271,
    source=("Chen et al. 2018 (arXiv 1802.02611); Howard et al. 2019; "
            "keras.applications MobileNetV3Small"),
))


if __name__ == "__main__":
    print(markdown_table())
