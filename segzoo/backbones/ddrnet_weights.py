"""DDRNet's official checkpoints (github.com/ydhongHIT/DDRNet): download pages and name map.

Where to get the checkpoints: the authors' repository, README "Pretrained models"
(Google Drive links, in :data:`OFFICIAL_CHECKPOINTS`): ImageNet-pretrained
DDRNet-23-slim, DDRNet-23 and DDRNet-39 (classification networks: the trunk
plus a classifier), and Cityscapes models of DDRNet-23-slim and DDRNet-23 (19
classes). MMSegmentation's conversions of them are read too (last paragraph).

Name map: the official parameter ``<module path>.<parameter>`` goes to the
Keras layer named after the module path (:mod:`segzoo.backbones.ddrnet`
explains the rule; trunk layers keep their official paths in
``DDRNetBackbone.official_paths``, head modules are ``spp.*`` (DAPPM),
``final_layer.*`` (segmentation head) and ``seghead_extra.*`` (auxiliary
head)). Ignored: the ImageNet files' classifier (``down5.*``, ``last_layer.*``,
``linear.*``) and the training criterion's buffers of the authors' training
code (``loss.*``, e.g. the class weights ``loss.criterion.weight``). The
ImageNet networks run ``layer5`` at stride 1 where the segmentation network
uses stride 2; the weights are the same shape and load as the official training
code loads them.

MMSegmentation's conversions of the authors' ImageNet files (:data:`IMAGENET_DOWNLOADS`,
on OpenMMLab's download server: a stable address, unlike the Drive links) name the
same parameters after MMSegmentation's modules (``stem.0.conv.weight``,
``context_branch_layers.0...``); :func:`from_mmseg` renames them to the authors'
names, and :func:`load_official_weights` reads either kind.
"""

from segzoo.checkpoints.mapping import assign_state, is_mmseg_state, rename_mmseg, sublayer_paths

_DRIVE = "https://drive.google.com/file/d/{}/view"

REPOSITORY = "github.com/ydhongHIT/DDRNet"

#: Download pages of the authors' checkpoints (github.com/ydhongHIT/DDRNet, README).
OFFICIAL_CHECKPOINTS = {
    "ddrnet23_slim": {"imagenet": _DRIVE.format("1mg5tMX7TJ9ZVcAiGSB4PEihPtrJyalB4"),
                      "cityscapes": _DRIVE.format("1d_K3Af5fKHYwxSo8HkxpnhiekhwovmiP")},
    "ddrnet23": {"imagenet": _DRIVE.format("1VoUsERBeuCaiuQJufu8PqpKKtGvCTdug"),
                 "cityscapes": _DRIVE.format("16viDZhbmuc3y7OSsUo2vhA7V6kYO0KX6")},
    "ddrnet39": {"imagenet": _DRIVE.format("122CMx6DZBaRRf-dOHYwuDY9vG0_UQ10i")},
}

_OPENMMLAB = "https://download.openmmlab.com/mmsegmentation/v0.5/ddrnet/pretrain/"

#: ImageNet trunks that ``weights="imagenet"`` downloads, with the start of their SHA-256:
#: MMSegmentation's conversions of the authors' files (its configs/ddrnet/*_in1k-pre_*.py).
#: OpenMMLab ends each file name with the first 8 hex digits of the file's SHA-256, which the
#: download is checked against. DDRNet-39 has none: its ImageNet file is only on the authors' Drive.
IMAGENET_DOWNLOADS = {
    "ddrnet23_slim": (_OPENMMLAB + "ddrnet23s-in1kpre_3rdparty-1ccac5b1.pth", "1ccac5b1"),
    "ddrnet23": (_OPENMMLAB + "ddrnet23-in1kpre_3rdparty-9ca29f62.pth", "9ca29f62"),
}

#: MMSegmentation's DDRNet modules (mmseg/models/backbones/ddrnet.py) -> the authors' module paths.
#: A ConvModule (``.conv`` + ``.bn``) is two entries; residual stages keep their blocks' indices.
MMSEG_MODULES = {
    "stem.0.conv": "conv1.0", "stem.0.bn": "conv1.1", "stem.1.conv": "conv1.3", "stem.1.bn": "conv1.4",
    "stem.2": "layer1", "stem.4": "layer2",
    **{f"context_branch_layers.{i}": f"layer{i + 3}" for i in range(3)},
    **{f"spatial_branch_layers.{i}": f"layer{i + 3}_" for i in range(3)},
    "compression_1.conv": "compression3.0", "compression_1.bn": "compression3.1",
    "compression_2.conv": "compression4.0", "compression_2.bn": "compression4.1",
    "down_1.conv": "down3.0", "down_1.bn": "down3.1",
    "down_2.0.conv": "down4.0", "down_2.0.bn": "down4.1", "down_2.1.conv": "down4.3", "down_2.1.bn": "down4.4",
}

#: The authors' stem convolutions have a bias; MMSegmentation's (followed by a batch norm) may have none.
STEM_CONVS = ("conv1.0", "conv1.3")

#: Top-level official modules that segzoo has no use for (see the module docstring).
IGNORED_MODULES = ("down5", "last_layer", "linear", "loss")

#: Official head modules, in the order messages name them.
HEAD_MODULES = ("spp", "final_layer", "seghead_extra")

#: The official parameter holding the number of classes.
CLASSES_KEY = "final_layer.conv2.weight"


def official_layers(model):
    """Official module path -> Keras layer, for every layer with weights of a DDRNet model.

    Args:
        model: a DDRNet :class:`segzoo.models.SegmentationModel` (from a ``ddrnet*`` preset).
    """
    backbone = model.backbone
    layers = {path: backbone.get_layer(name) for name, path in backbone.official_paths.items()}
    parents = {"spp": model.head.spp, "final_layer": model.head.final_layer,
               "seghead_extra": model.aux_head}
    for prefix, parent in parents.items():
        if parent is not None:
            layers.update(sublayer_paths(prefix, parent))
    return layers


def from_mmseg(state, source="checkpoint"):
    """MMSegmentation's DDRNet backbone state dict, renamed to the authors' parameter names
    (:func:`segzoo.checkpoints.rename_mmseg` with :data:`MMSEG_MODULES`). Its DAPPM (``spp.*``, another
    layout) and heads are not read: only the trunk."""
    return rename_mmseg(state, MMSEG_MODULES, left_out=("spp.", "decode_head.", "auxiliary_head."),
                        biased_convs=STEM_CONVS, source=source)


def load_official_weights(model, state, source="checkpoint"):
    """Copy an official DDRNet state dict into ``model``; nothing is assigned unless everything fits.

    MMSegmentation's conversions of the authors' files are read too (:func:`from_mmseg`).

    A state dict without head keys (``spp.*``, ``final_layer.*``) is a trunk
    (an ImageNet checkpoint): the heads keep their initialisation. A full one
    without ``seghead_extra.*`` leaves the training-only auxiliary head at its
    initialisation. Both are stated in an INFO log line.

    Args:
        model: a DDRNet :class:`segzoo.models.SegmentationModel`.
        state: ``{official key: numpy array}``, prefixes already removed.
        source: how to name the checkpoint in messages.

    Raises:
        CheckpointError: listing the missing, unexpected and mis-shaped keys.
    """
    hint = ""
    if is_mmseg_state(state):
        state = from_mmseg(state, source)
        hint = " (Read as an MMSegmentation DDRNet trunk: its keys were renamed to the authors'.)"
    assign_state(model, state, official_layers(model), head_modules=HEAD_MODULES,
                 segmentation_modules=("spp", "final_layer"), optional_modules=("seghead_extra",),
                 ignored_modules=IGNORED_MODULES, source=source, hint=hint)
    return model
