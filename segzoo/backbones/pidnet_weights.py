"""PIDNet's official checkpoints (github.com/XuJiacong/PIDNet): download pages and name map.

Where to get the checkpoints: the authors' README, "Models" (Google Drive
links, in :data:`OFFICIAL_CHECKPOINTS`; the README notes that single links may
have stopped working and gives a folder with all of them, :data:`ALL_CHECKPOINTS`):
ImageNet-pretrained PIDNet-S, -M and -L (``PIDNet_S_ImageNet.pth.tar``...,
``{"state_dict": ...}`` with keys without a prefix), Cityscapes models of all
three (val and test, 19 classes) and CamVid models of PIDNet-S and -M (11
classes), saved from the authors' ``FullModel``: keys with a ``model.`` prefix,
the training heads ``seghead_p``/``seghead_d`` present, and the criterion's
buffers (``loss.*``, ignored).

Name map: trunk layers keep their official module paths in
``PIDNetBackbone.official_paths`` (:mod:`segzoo.backbones.pidnet`); head
modules are ``spp.*`` (PAPPM or DAPPM), ``dfm.*`` (Light_Bag or Bag),
``final_layer.*``, and the training-only ``seghead_p.*`` (auxiliary head) and
``seghead_d.*`` (boundary head); their sublayers are named after the official
modules (:func:`segzoo.checkpoints.official_module_name`). An ImageNet trunk's
keys of modules that the segmentation network does not have (its classifier)
are ignored and listed in an INFO log line; every other key must fit.

MMSegmentation's conversions of the authors' ImageNet files (:data:`IMAGENET_DOWNLOADS`,
on OpenMMLab's download server) name the parameters after MMSegmentation's modules
(``stem.0.conv.weight``, ``i_branch_layers.0...``, ``pag_1.f_i...``) and hold the
stem and the I and P branches only: :func:`from_mmseg` renames them, and the D
branch then keeps its initialisation, as in MMSegmentation's own training.
"""

from segzoo.backbones.ddrnet_weights import STEM_CONVS
from segzoo.checkpoints.mapping import assign_state, is_mmseg_state, rename_mmseg, sublayer_paths

_DRIVE = "https://drive.google.com/file/d/{}/view?usp=sharing"

REPOSITORY = "github.com/XuJiacong/PIDNet"

#: Download pages of the authors' checkpoints (github.com/XuJiacong/PIDNet, README "Models").
OFFICIAL_CHECKPOINTS = {
    "pidnet_s": {"imagenet": _DRIVE.format("1hIBp_8maRr60-B3PF0NVtaA6TYBvO4y-"),
                 "cityscapes_val": _DRIVE.format("1JakgBam_GrzyUMp-NbEVVBPEIXLSCssH"),
                 "cityscapes_test": _DRIVE.format("1VcF3NXLQvz2qE3LXttpxWQSdxTbATslO"),
                 "camvid": _DRIVE.format("1h3IaUpssCnTWHiPEUkv-VgFmj86FkY3J")},
    "pidnet_m": {"imagenet": _DRIVE.format("1gB9RxYVbdwi9eO5lbT073q-vRoncpYT1"),
                 "cityscapes_val": _DRIVE.format("1q0i4fVWmO7tpBKq_eOyIXe-mRf_hIS7q"),
                 "cityscapes_test": _DRIVE.format("1wxdFBzMmkF5XDGc_LkvCOFJ-lAdb8trT"),
                 "camvid": _DRIVE.format("1rNGTc8LD42h8G3HaedtqwS0un4_-gEbB")},
    "pidnet_l": {"imagenet": _DRIVE.format("1Eg6BwEsnu3AkKLO8lrKsoZ8AOEb2KZHY"),
                 "cityscapes_val": _DRIVE.format("1AR8LHC3613EKwG23JdApfTGsyOAcH0_L"),
                 "cityscapes_test": _DRIVE.format("1Ftij_vhcd62WEBqGdamZUcklBcdtB1f3")},
}

#: The authors' folder with every checkpoint (their README: the single links may no longer work).
ALL_CHECKPOINTS = ("https://drive.google.com/drive/folders/0BySIOtxxULinfjlGdGFiT3NQVUdLVDBxWnhhTjB4VXNBRkFOa281"
                   "WHlkektYY2VBcWVZb1k?resourcekey=0-w0JIXUekD-FCW-Rm1Z-HfQ&usp=sharing")

_OPENMMLAB = "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/pidnet/"

#: ImageNet trunks that ``weights="imagenet"`` downloads: MMSegmentation's conversions of the
#: authors' files (its configs/pidnet), with their SHA-256: in full where it is published, else
#: the 8 hex digits that OpenMMLab puts at the end of the file name.
IMAGENET_DOWNLOADS = {
    "pidnet_s": (_OPENMMLAB + "pidnet-s_imagenet1k_20230306-715e6273.pth",
                 "715e62734f95057f18edb286d830bee09bba08b0ecfca42420506d1d7aba97de"),
    "pidnet_m": (_OPENMMLAB + "pidnet-m_imagenet1k_20230306-39893c52.pth", "39893c52"),
    "pidnet_l": (_OPENMMLAB + "pidnet-l_imagenet1k_20230306-67889109.pth", "67889109"),
}

#: MMSegmentation's PIDNet modules (mmseg/models/backbones/pidnet.py) -> the authors' module paths.
#: A ConvModule (``.conv`` + ``.bn``) is two entries; PagFM's ``f_i`` (I branch) is the authors'
#: ``f_y``, its ``f_p`` (P branch) their ``f_x``.
MMSEG_MODULES = {
    "stem.0.conv": "conv1.0", "stem.0.bn": "conv1.1", "stem.1.conv": "conv1.3", "stem.1.bn": "conv1.4",
    "stem.2": "layer1", "stem.4": "layer2",
    **{f"i_branch_layers.{i}": f"layer{i + 3}" for i in range(3)},
    **{f"p_branch_layers.{i}": f"layer{i + 3}_" for i in range(3)},
    **{f"d_branch_layers.{i}": f"layer{i + 3}_d" for i in range(3)},
    **{f"compression_{i}.{part}": f"compression{i + 2}.{index}" for i in (1, 2)
       for part, index in (("conv", 0), ("bn", 1))},
    **{f"diff_{i}.{part}": f"diff{i + 2}.{index}" for i in (1, 2) for part, index in (("conv", 0), ("bn", 1))},
    **{f"pag_{i}.{theirs}.{part}": f"pag{i + 2}.{ours}.{index}" for i in (1, 2)
       for theirs, ours in (("f_i", "f_y"), ("f_p", "f_x"), ("up", "up")) for part, index in (("conv", 0), ("bn", 1))},
}

#: The D branch, which MMSegmentation's ImageNet files do not have.
D_BRANCH_MODULES = ("layer3_d", "layer4_d", "layer5_d", "diff3", "diff4")

#: Top-level official modules that segzoo has no use for: the training criterion's buffers.
IGNORED_MODULES = ("loss",)

#: Official head modules, in the order messages name them.
HEAD_MODULES = ("spp", "dfm", "final_layer", "seghead_p", "seghead_d")

#: The official parameter holding the number of classes.
CLASSES_KEY = "final_layer.conv2.weight"


def official_layers(model):
    """Official module path -> Keras layer, for every layer with weights of a PIDNet model.

    Args:
        model: a PIDNet :class:`segzoo.models.SegmentationModel` (from a ``pidnet_*`` preset).
    """
    backbone = model.backbone
    layers = {path: backbone.get_layer(name) for name, path in backbone.official_paths.items()}
    parents = {"spp": model.head.spp, "dfm": model.head.dfm, "final_layer": model.head.final_layer,
               "seghead_p": getattr(model, "aux_head", None), "seghead_d": getattr(model, "boundary_head", None)}
    for prefix, parent in parents.items():
        if parent is not None:
            layers.update(sublayer_paths(prefix, parent))
    return layers


def from_mmseg(state, source="checkpoint"):
    """MMSegmentation's PIDNet backbone state dict, renamed to the authors' parameter names
    (:func:`segzoo.checkpoints.rename_mmseg` with :data:`MMSEG_MODULES`). Its PAPPM/DAPPM and
    fusion (``spp.*``, ``dfm.*``, other layouts) and heads are not read: only the trunk."""
    return rename_mmseg(state, MMSEG_MODULES, left_out=("spp.", "dfm.", "decode_head.", "auxiliary_head."),
                        biased_convs=STEM_CONVS, source=source)


def load_official_weights(model, state, source="checkpoint"):
    """Copy an official PIDNet state dict into ``model``; nothing is assigned unless everything fits.

    MMSegmentation's conversions of the authors' files are read too (:func:`from_mmseg`); their
    trunks lack the D branch, which then keeps its initialisation (logged).

    A state dict without ``final_layer.*`` is a trunk (an ImageNet checkpoint):
    the head modules it lacks keep their initialisation, and keys of modules
    the model does not have (the ImageNet classifier) are ignored. A full one
    without ``seghead_p.*``/``seghead_d.*`` (saved from ``get_pred_model``)
    leaves the training-only heads at their initialisation. Both are logged.

    Args:
        model: a PIDNet :class:`segzoo.models.SegmentationModel`.
        state: ``{official key: numpy array}``, prefixes already removed.
        source: how to name the checkpoint in messages.

    Raises:
        CheckpointError: listing the missing, unexpected and mis-shaped keys.
    """
    head_modules, hint = HEAD_MODULES, ""
    if is_mmseg_state(state):
        state = from_mmseg(state, source)
        head_modules = HEAD_MODULES + D_BRANCH_MODULES  # a trunk without them keeps their initialisation
        hint = " (Read as an MMSegmentation PIDNet trunk: its keys were renamed to the authors'.)"
    assign_state(model, state, official_layers(model), head_modules=head_modules,
                 segmentation_modules=("final_layer",), optional_modules=("seghead_p", "seghead_d"),
                 ignored_modules=IGNORED_MODULES, trunk_extras_ignored=True, source=source, hint=hint)
    return model
