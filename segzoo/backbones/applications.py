"""What the backbones built on ``keras.applications`` share: pyramid taps and ImageNet weight files.

A backbone here builds a ``keras.applications`` model without its classifier,
loads its weights, and exposes named layers of it as the feature pyramid. Taps
are always layer names that ``keras.applications`` writes by hand (such as
``block2b_add``), never names that Keras generates (``activation_19``), which
change with the number of models built before.
"""

import dataclasses
import os
from typing import NamedTuple

import keras

from segzoo.errors import DownloadError
from segzoo.keras_internals import keras_home


class InputOf(NamedTuple):
    """A tap on the input of a named layer: for a tensor whose own layer has a generated name."""

    layer: str


#: A tap on the ``keras.applications`` model's own output.
MODEL_OUTPUT = "<model output>"


def tap_features(model, taps):
    """The tensors of ``model`` named by ``taps``.

    Args:
        model: a functional ``keras.applications`` model.
        taps: ``{level: tap}``, a tap being a layer name (its output),
            :class:`InputOf` (the input of that layer) or :data:`MODEL_OUTPUT`.

    Returns:
        ``{level: KerasTensor}``.
    """
    features = {}
    for level, tap in taps.items():
        if tap == MODEL_OUTPUT:
            features[level] = model.output
        elif isinstance(tap, InputOf):
            features[level] = model.get_layer(tap.layer).input
        else:
            features[level] = model.get_layer(tap).output
    return features


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    """One ImageNet weights file of ``keras.applications``: its name, URL and md5 hash."""

    file_name: str
    origin: str
    file_hash: str

    def fetch(self, backbone_name):
        """Path of the file in Keras's cache, downloaded on first use as ``keras.applications`` does.

        Raises:
            DownloadError: the file is not cached and cannot be downloaded (offline,
                for instance); the message says where to place it by hand.
        """
        try:
            return keras.utils.get_file(self.file_name, self.origin, cache_subdir="models",
                                        file_hash=self.file_hash)
        except Exception as error:  # get_file raises a bare Exception on URL failures.
            cache_path = os.path.join(os.path.expanduser(keras_home()), "models", self.file_name)
            raise DownloadError(
                f"{backbone_name}: could not get the ImageNet weights file {self.file_name!r} "
                f"({error}). Without internet, download {self.origin} (md5 {self.file_hash}) on "
                f"another machine and place it by hand at {cache_path} (Keras's cache, "
                f"~/.keras/models/ unless $KERAS_HOME is set), or pass weights='<path of the "
                f"file>'; weights=None builds the backbone without pretrained weights."
            ) from error


def resolve_weights(weights, weights_file, backbone_name):
    """The ``weights`` argument for a ``keras.applications`` builder: None or a local file path.

    ``"imagenet"`` becomes the cached (downloaded on first use) ``weights_file``;
    passing a path rather than ``"imagenet"`` to ``keras.applications`` keeps
    the architecture independent of the weights (EfficientNet V1 adds a layer
    for ``"imagenet"`` only).

    Args:
        weights: None, "imagenet" or a path, already checked by
            :func:`segzoo.backbones.base.check_weights_argument`.
        weights_file: the variant's :class:`WeightsFile`, or None when
            ``keras.applications`` has no ImageNet weights for it.
        backbone_name: for error messages.
    """
    if weights != "imagenet":
        return None if weights is None else os.fspath(weights)
    if weights_file is None:
        raise ValueError(f"{backbone_name}: keras.applications has no ImageNet weights for this "
                         f"configuration; use weights=None or a weights file.")
    return weights_file.fetch(backbone_name)
