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
"""

from segzoo.checkpoints.mapping import assign_state, sublayer_paths

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


def load_official_weights(model, state, source="checkpoint"):
    """Copy an official PIDNet state dict into ``model``; nothing is assigned unless everything fits.

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
    assign_state(model, state, official_layers(model), head_modules=HEAD_MODULES,
                 segmentation_modules=("final_layer",), optional_modules=("seghead_p", "seghead_d"),
                 ignored_modules=IGNORED_MODULES, trunk_extras_ignored=True, source=source)
    return model
