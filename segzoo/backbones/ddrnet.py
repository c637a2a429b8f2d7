"""DDRNet's dual-resolution trunk (Hong et al. 2021, arXiv 2101.06085), the official layout.

A stem to stride 4, then two branches: a high-resolution (spatial) branch that
stays at stride 8 and a low-resolution (context) branch that goes down to
stride 64, exchanging information in bilateral fusions after stage 3 (twice in
DDRNet-39, whose stage 3 is split in two halves) and after stage 4. The last
block of every layer has no final ReLU; the ReLU is applied where branches meet,
as in the official ``DualResNet`` (ydhongHIT/DDRNet, ``segmentation/DDRNet_*.py``).

Layer names. Every Keras layer is named after the official PyTorch module it
stands for: the module path with ``.`` replaced by ``_``. ``layer3_.0.conv1``
becomes ``layer3__0_conv1``, ``conv1.1`` (the stem's first batch norm) becomes
``conv1_1``, ``layer2.0.downsample.0`` becomes ``layer2_0_downsample_0``. The
rule cannot be inverted in general (``layer3_1.0`` and ``layer3.1_0`` would
meet), so the trunk also keeps ``official_paths`` (Keras name -> module path of
every layer with weights), and a checkpoint converts by names alone (see
:mod:`segzoo.weights`). Layers with
no PyTorch module of their own add a suffix to the module they belong to:
``<conv>_pad`` (explicit zero padding), ``<block>_relu1``/``_relu2`` (ReLUs
inside a block), ``<block>_add`` (residual sum), ``<block>_relu`` (its final
ReLU), ``<module>_relu`` (the trunk's ReLU applied to a module's output),
``<down>_fuse``/``<compression>_fuse``/``<compression>_resize`` (fusions).

Parity with PyTorch: stride-2 3x3 convolutions are ``ZeroPadding2D(1)`` then a
"valid" convolution (Keras "same" pads only the bottom and right of even
inputs); batch norm uses epsilon 1e-5; bilinear resizes use half-pixel centres
(``align_corners=False``) through :class:`segzoo.layers.ResizeLike`.

Size: every stride-2 layer maps ``n`` to ``ceil(n / 2)``, and the fusions resize
the low branch to the high branch's size, so the trunk runs on any size; the
official model needs height and width to be multiples of 8 (it resizes to
``H // 8``, which must equal the high branch's ``ceil(H / 8)``). That is
``size_divisor``; 960x720 (CamVid) for instance is not a multiple of 32.
"""

import keras

from segzoo.backbones.base import Backbone
from segzoo.layers import ImageNormalization, ResizeLike
from segzoo.layers.conv import BN_EPSILON, BN_MOMENTUM

#: The three variants of the paper: trunk constructor arguments.
#: ``blocks``: residual blocks of layer1..layer4 (the high branch has as many
#: as the low branch in stages 3 and 4); ``stage3_splits``: stage 3 in that
#: many parts with a bilateral fusion after each (2 in DDRNet-39).
DDRNET_VARIANTS = {
    "ddrnet23_slim": {"planes": 32, "highres_planes": 64, "blocks": (2, 2, 2, 2), "stage3_splits": 1},
    "ddrnet23": {"planes": 64, "highres_planes": 128, "blocks": (2, 2, 2, 2), "stage3_splits": 1},
    "ddrnet39": {"planes": 64, "highres_planes": 128, "blocks": (3, 4, 6, 3), "stage3_splits": 2},
}

#: Channel growth of the Bottleneck block (layer5 and layer5_).
BOTTLENECK_EXPANSION = 2


def keras_name(path):
    """The Keras name of the layer standing for the official module ``path``: dots become underscores."""
    return path.replace(".", "_")


class _TrunkBuilder:
    """Makes the trunk's layers, named after official module paths, and records those paths.

    Every method takes the official (dotted) path of the module it builds;
    ``official_paths`` maps each weighted layer's Keras name to its path.
    """

    def __init__(self):
        self.official_paths = {}

    def _named(self, path):
        self.official_paths[keras_name(path)] = path
        return keras_name(path)

    def conv(self, x, filters, kernel_size, path, strides=1, use_bias=False):
        """PyTorch ``Conv2d(kernel_size, stride, padding=kernel_size // 2)``."""
        if strides > 1 and kernel_size > 1:
            x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{keras_name(path)}_pad")(x)
            padding = "valid"
        else:
            padding = "same" if kernel_size > 1 else "valid"
        return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                                   use_bias=use_bias, name=self._named(path))(x)

    def bn(self, x, path):
        """PyTorch ``BatchNorm2d`` (eps 1e-5, momentum 0.1)."""
        return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                               name=self._named(path))(x)

    @staticmethod
    def relu(x, name):
        return keras.layers.ReLU(name=name)(x)

    def block(self, x, filters, path, strides=1, bottleneck=False, final_relu=True):
        """A BasicBlock (two 3x3) or Bottleneck (1x1, 3x3, 1x1 to 2x channels).

        A 1x1 convolution + BN shortcut (``downsample``) appears where the
        stride or the channel count changes. Returns ``filters`` (BasicBlock)
        or ``2 * filters`` (Bottleneck) channels at ``1 / strides`` of the input size.
        """
        name = keras_name(path)
        out_channels = filters * BOTTLENECK_EXPANSION if bottleneck else filters
        if bottleneck:
            y = self.relu(self.bn(self.conv(x, filters, 1, f"{path}.conv1"), f"{path}.bn1"), f"{name}_relu1")
            y = self.conv(y, filters, 3, f"{path}.conv2", strides)
            y = self.relu(self.bn(y, f"{path}.bn2"), f"{name}_relu2")
            y = self.bn(self.conv(y, out_channels, 1, f"{path}.conv3"), f"{path}.bn3")
        else:
            y = self.conv(x, filters, 3, f"{path}.conv1", strides)
            y = self.relu(self.bn(y, f"{path}.bn1"), f"{name}_relu1")
            y = self.bn(self.conv(y, filters, 3, f"{path}.conv2"), f"{path}.bn2")
        shortcut = x
        if strides != 1 or x.shape[-1] != out_channels:
            shortcut = self.conv(x, out_channels, 1, f"{path}.downsample.0", strides)
            shortcut = self.bn(shortcut, f"{path}.downsample.1")
        y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
        return self.relu(y, f"{name}_relu") if final_relu else y

    def layer(self, x, filters, blocks, path, strides=1, bottleneck=False):
        """``blocks`` residual blocks, the first with ``strides``; no ReLU after the last."""
        for index in range(blocks):
            x = self.block(x, filters, f"{path}.{index}", strides if index == 0 else 1,
                           bottleneck=bottleneck, final_relu=index < blocks - 1)
        return x

    def bilateral_fusion(self, low, high, suffix, down_channels):
        """Adds the high branch to the low one and the low branch to the high one.

        ``low`` and ``high`` are the outputs of ``layer<suffix>`` and
        ``layer<suffix>_`` (no ReLU). ``down<suffix>`` is one stride-2 conv3x3 +
        BN per entry of ``down_channels`` (a ReLU between two);
        ``compression<suffix>`` is a 1x1 conv + BN to the high branch's
        channels, then a bilinear resize to its size. Returns
        ``(low + down(relu(high)), high + resize(compression(relu(low))))``.
        """
        down, compression = f"down{suffix}", f"compression{suffix}"
        y = self.relu(high, f"layer{suffix}__relu")
        for step, channels in enumerate(down_channels):
            if step:
                y = self.relu(y, f"{down}_{3 * step - 1}")
            y = self.conv(y, channels, 3, f"{down}.{3 * step}", strides=2)
            y = self.bn(y, f"{down}.{3 * step + 1}")
        fused_low = keras.layers.Add(name=f"{down}_fuse")([low, y])
        z = self.conv(self.relu(low, f"layer{suffix}_relu"), high.shape[-1], 1, f"{compression}.0")
        z = ResizeLike(name=f"{compression}_resize")([self.bn(z, f"{compression}.1"), high])
        fused_high = keras.layers.Add(name=f"{compression}_fuse")([high, z])
        return fused_low, fused_high


@keras.saving.register_keras_serializable(package="segzoo")
class DDRNetBackbone(Backbone):
    """DDRNet's dual-resolution trunk, from RGB images to its two branches.

    Input: float ``(B, H, W, 3)``, RGB 0..255, ``H`` and ``W`` multiples of 8;
    the first layer normalises with ImageNet's mean and standard deviation, as
    the official weights expect. Outputs (no ReLU applied, as the official
    heads take them):

    - ``"high"``: the high-resolution branch after ``layer5_``,
      ``(B, H/8, W/8, 2 * highres_planes)``, stride 8;
    - ``"low"``: the low-resolution branch after ``layer5``,
      ``(B, H/64, W/64, 16 * planes)``, stride 64 (sizes rounded up), DAPPM's input;
    - ``"high_stage3"``: the high-resolution branch right after the (last)
      stage-3 fusion, ``(B, H/8, W/8, highres_planes)``, stride 8, the input
      of the training-only auxiliary head.

    Args:
        planes: channels of the stem and layer1 (32 in DDRNet-23-slim, 64 in
            DDRNet-23 and -39); layer2..layer5 have 2, 4, 8, 16 times as many.
        highres_planes: channels of the high-resolution branch (official: ``2 * planes``).
        blocks: residual blocks in layer1..layer4; the high branch has
            ``blocks[2]`` and ``blocks[3]`` in stages 3 and 4.
        stage3_splits: stage 3 in this many parts, each followed by a bilateral
            fusion (1, or 2 for DDRNet-39, whose modules are then ``layer3_1``,
            ``layer3_2``, ``down3_1``...).
        input_shape: ``(H, W, 3)``; ``None`` for sizes chosen at run time.
        **kwargs: ``name``, ``trainable``.

    See :data:`DDRNET_VARIANTS` for the paper's three configurations.
    """

    size_divisor = 8

    def __init__(self, planes=32, highres_planes=None, blocks=(2, 2, 2, 2), stage3_splits=1,
                 input_shape=(None, None, 3), **kwargs):
        highres_planes = 2 * planes if highres_planes is None else highres_planes
        blocks = tuple(int(b) for b in blocks)
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be 4 positive block counts (layer1..layer4); got {blocks}.")
        if stage3_splits < 1 or blocks[2] % stage3_splits:
            raise ValueError(f"stage3_splits={stage3_splits} must divide the {blocks[2]} blocks of stage 3.")

        images = keras.Input(tuple(input_shape), name="images")
        x = ImageNormalization(name="normalization")(images)
        trunk = _TrunkBuilder()
        for index in (0, 3):  # conv1 = Sequential(conv, BN, ReLU, conv, BN, ReLU); convs with bias
            x = trunk.conv(x, planes, 3, f"conv1.{index}", strides=2, use_bias=True)
            x = trunk.relu(trunk.bn(x, f"conv1.{index + 1}"), f"conv1_{index + 2}")
        x = trunk.layer(x, planes, blocks[0], "layer1")
        x = trunk.layer(trunk.relu(x, "layer1_relu"), 2 * planes, blocks[1], "layer2", strides=2)

        # Stage 3: both branches start from relu(layer2); a fusion after each split.
        low_in = high_in = trunk.relu(x, "layer2_relu")
        for split in range(stage3_splits):
            suffix = "3" if stage3_splits == 1 else f"3_{split + 1}"
            low = trunk.layer(low_in, 4 * planes, blocks[2] // stage3_splits, f"layer{suffix}",
                              strides=2 if split == 0 else 1)
            high = trunk.layer(high_in, highres_planes, blocks[2] // stage3_splits, f"layer{suffix}_")
            low, high = trunk.bilateral_fusion(low, high, suffix, (4 * planes,))
            low_in = trunk.relu(low, f"down{suffix}_fuse_relu")
            high_in = trunk.relu(high, f"compression{suffix}_fuse_relu")
        high_stage3 = high

        low = trunk.layer(low_in, 8 * planes, blocks[3], "layer4", strides=2)
        high = trunk.layer(high_in, highres_planes, blocks[3], "layer4_")
        low, high = trunk.bilateral_fusion(low, high, "4", (4 * planes, 8 * planes))

        high = trunk.layer(trunk.relu(high, "compression4_fuse_relu"), highres_planes, 1, "layer5_",
                           bottleneck=True)
        low = trunk.layer(trunk.relu(low, "down4_fuse_relu"), 8 * planes, 1, "layer5", strides=2,
                          bottleneck=True)

        super().__init__(images, {"high": high, "low": low, "high_stage3": high_stage3},
                         {"high": 8, "low": 64, "high_stage3": 8}, **kwargs)
        self.planes = planes
        self.highres_planes = highres_planes
        self.blocks = blocks
        self.stage3_splits = stage3_splits
        self.image_shape = tuple(input_shape)
        #: Keras layer name -> official PyTorch module path, for every layer with weights.
        self.official_paths = trunk.official_paths

    def get_config(self):
        return {**super().get_config(), "planes": self.planes, "highres_planes": self.highres_planes,
                "blocks": list(self.blocks), "stage3_splits": self.stage3_splits,
                "input_shape": list(self.image_shape)}
