"""DDRNet's official checkpoints (github.com/ydhongHIT/DDRNet): download pages and name map.

Where to get the checkpoints: the authors' repository, README "Pretrained models"
(Google Drive links, in :data:`OFFICIAL_CHECKPOINTS`): ImageNet-pretrained
DDRNet-23-slim, DDRNet-23 and DDRNet-39 (classification networks: the trunk
plus a classifier), and Cityscapes models of DDRNet-23-slim and DDRNet-23 (19
classes). MMSegmentation's converted files (``ddrnet23s_in1k_mmseg.pth``...)
name their parameters differently (``backbone.stem...``) and are not read
here: convert the authors' files.

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
"""

from segzoo.checkpoints.mapping import assign_state, sublayer_paths

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


def load_official_weights(model, state, source="checkpoint"):
    """Copy an official DDRNet state dict into ``model``; nothing is assigned unless everything fits.

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
    if any(k.startswith(("backbone.", "decode_head.")) for k in state):
        hint = (" The keys look like an MMSegmentation checkpoint; convert the authors' files "
                f"({REPOSITORY}) instead.")
    assign_state(model, state, official_layers(model), head_modules=HEAD_MODULES,
                 segmentation_modules=("spp", "final_layer"), optional_modules=("seghead_extra",),
                 ignored_modules=IGNORED_MODULES, source=source, hint=hint)
    return model
