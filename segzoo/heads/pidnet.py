"""PIDNet's heads: PAPPM, the boundary-attention fusions (Light_Bag, Bag) and the head joining them.

Official code: github.com/XuJiacong/PIDNet, ``models/model_utils.py``. Layer
names follow the official modules with the last ``.`` of the module path
replaced by ``_`` (:func:`segzoo.checkpoints.official_module_name`): in
:class:`PAPPM`, ``scale_process.0`` (a batch norm) is ``scale_process_0``;
in :class:`LightBag`, ``conv_p.0`` (a 1x1 convolution) is ``conv_p_0``.
:class:`PIDNetHead` holds them as ``spp``, ``dfm`` and ``final_layer``, the
official attribute names. The segmentation head is DDRNet's
(:class:`segzoo.heads.ddrnet.DDRNetSegmentHead`, official ``segmenthead``).
"""

import keras
from keras import ops

from segzoo.heads.ddrnet import DAPPM, DDRNetSegmentHead, _batch_norm, _conv
from segzoo.layers import ResizeLike

#: Pyramid pooling modules by name: PAPPM (PIDNet-S and -M), DAPPM (PIDNet-L).
PYRAMID_POOLING = ("pappm", "dappm")
#: Boundary-attention fusions by name: Light_Bag (PIDNet-S and -M), Bag (PIDNet-L).
FUSIONS = ("light_bag", "bag")


@keras.saving.register_keras_serializable(package="segzoo")
class SplitGroupConv2D(keras.layers.Conv2D):
    """A grouped ``Conv2D`` computed as one convolution per group, then concatenated.

    Same weights and outputs as ``keras.layers.Conv2D(..., groups=g)`` (kernel
    ``(kh, kw, C_in / g, filters)``; output group ``k`` reads input group ``k``,
    as PyTorch's ``groups``). TensorFlow runs a grouped convolution on the CPU
    through a nested XLA function, which tf2onnx cannot export; ``g`` plain
    convolutions export everywhere. Channels last only.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1:
            return super().convolution_op(inputs, kernel)
        parts = zip(ops.split(inputs, self.groups, axis=-1), ops.split(kernel, self.groups, axis=-1))
        return ops.concatenate([ops.conv(x, k, strides=list(self.strides), padding=self.padding,
                                         dilation_rate=self.dilation_rate, data_format=self.data_format)
                                for x, k in parts], axis=-1)


@keras.saving.register_keras_serializable(package="segzoo")
class PAPPM(DAPPM):
    """Parallel Aggregation Pyramid Pooling Module (PIDNet-S and -M's context module).

    DAPPM's five branches (``scale0``: none; ``scale1..scale3``: average pooling
    k5 s2, k9 s4, k17 s8 with zero padding counted in the average, PyTorch's
    ``AvgPool2d``; ``scale4``: global average; each BN-ReLU-conv1x1 to
    ``branch_channels``), but the four pooled branches are resized back
    (bilinear, half-pixel), each added to ``scale0``'s output, and refined
    together, in parallel, by one BN-ReLU-grouped-conv3x3 (4 groups,
    ``scale_process``). ``scale0`` and the four refined branches are
    concatenated and compressed by BN-ReLU-conv1x1 to ``out_channels``
    (``compression``), plus a BN-ReLU-conv1x1 ``shortcut`` of the input.

    Args:
        branch_channels: channels of each branch (96 in PIDNet-S and -M).
        out_channels: output channels.

    Shape: ``(B, h, w, C) -> (B, h, w, out_channels)``, same stride as the input.
    """

    def __init__(self, branch_channels=96, out_channels=128, **kwargs):
        super().__init__(branch_channels, out_channels, **kwargs)

    def _make_refinement(self, branch_channels, dtype):
        self.process_norm = _batch_norm("scale_process_0", dtype)
        self.process_conv = SplitGroupConv2D(4 * branch_channels, 3, padding="same", groups=4,
                                             use_bias=False, dtype=dtype, name="scale_process_2")

    def _build_refinement(self):
        process_shape = (None, None, None, 4 * self.branch_channels)
        self.process_norm.build(process_shape)
        self.process_conv.build(process_shape)

    def _refine(self, base, branches, training):
        """``[base, the four branches plus base, refined together by one grouped BN-ReLU-conv3x3]``."""
        scales = ops.concatenate([x + base for x in branches], axis=-1)
        return [base, self._bn_relu_conv(scales, self.process_norm, self.process_conv, training)]


class _BoundaryFusion(keras.layers.Layer):
    """What PIDNet's two fusions share: ``layer([p, i, d]) -> (B, H, W, out_channels)``, an ``out_channels`` config."""

    def __init__(self, out_channels, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = out_channels

    def compute_output_shape(self, input_shapes):
        return (*input_shapes[0][:-1], self.out_channels)

    def get_config(self):
        config = super().get_config()
        config.update(out_channels=self.out_channels)
        return config


@keras.saving.register_keras_serializable(package="segzoo")
class LightBag(_BoundaryFusion):
    """PIDNet-S and -M's boundary-attention-guided fusion (official ``Light_Bag``).

    ``layer([p, i, d])``, three ``(B, H, W, C)`` maps (P, I and D branches):
    with ``a = sigmoid(d)``, returns ``conv_p((1 - a) * i + p) + conv_i(i + a * p)``,
    each ``conv_*`` a 1x1 convolution + batch norm to ``out_channels``. Where the
    D branch sees a boundary, detail (P) dominates; elsewhere context (I).

    Args:
        out_channels: output channels.

    Shape: ``3 x (B, H, W, C) -> (B, H, W, out_channels)``.
    """

    #: (convolution, batch norm) attribute pairs that :func:`segzoo.folding.fold_batch_norm` merges.
    batch_norm_pairs = (("conv_p", "norm_p"), ("conv_i", "norm_i"))

    def __init__(self, out_channels, **kwargs):
        super().__init__(out_channels, **kwargs)
        dtype = self.dtype_policy
        self.conv_p = _conv(out_channels, 1, "conv_p_0", dtype)
        self.norm_p = _batch_norm("conv_p_1", dtype)
        self.conv_i = _conv(out_channels, 1, "conv_i_0", dtype)
        self.norm_i = _batch_norm("conv_i_1", dtype)

    def build(self, input_shape):
        shape = input_shape[0]
        out_shape = (*shape[:-1], self.out_channels)
        for conv, norm in ((self.conv_p, self.norm_p), (self.conv_i, self.norm_i)):
            conv.build(shape)
            norm.build(out_shape)
        self.built = True

    def call(self, inputs, training=None):
        p, i, d = inputs
        attention = ops.sigmoid(d)
        p_add = self.norm_p(self.conv_p((1.0 - attention) * i + p), training=training)
        i_add = self.norm_i(self.conv_i(i + attention * p), training=training)
        return p_add + i_add


@keras.saving.register_keras_serializable(package="segzoo")
class Bag(_BoundaryFusion):
    """PIDNet-L's boundary-attention-guided fusion (official ``Bag``).

    ``layer([p, i, d])``, three ``(B, H, W, C)`` maps: with ``a = sigmoid(d)``,
    returns BN-ReLU-conv3x3 (``conv``) of ``a * p + (1 - a) * i``.

    Args:
        out_channels: output channels.

    Shape: ``3 x (B, H, W, C) -> (B, H, W, out_channels)``.
    """

    def __init__(self, out_channels, **kwargs):
        super().__init__(out_channels, **kwargs)
        dtype = self.dtype_policy
        self.norm = _batch_norm("conv_0", dtype)
        self.conv = _conv(out_channels, 3, "conv_2", dtype)

    def build(self, input_shape):
        self.norm.build(input_shape[0])
        self.conv.build(input_shape[0])
        self.built = True

    def call(self, inputs, training=None):
        p, i, d = inputs
        attention = ops.sigmoid(d)
        return self.conv(ops.relu(self.norm(attention * p + (1.0 - attention) * i, training=training)))


@keras.saving.register_keras_serializable(package="segzoo")
class PIDNetHead(keras.layers.Layer):
    """PIDNet's head on :class:`segzoo.backbones.pidnet.PIDNetBackbone` features.

    Reads ``features["i"]`` (stride 64), ``features["p"]`` and ``features["d"]``
    (stride 8): the pyramid pooling module (``spp``: :class:`PAPPM` or DAPPM) on
    the I branch, a bilinear resize to the P branch's size, the
    boundary-attention fusion (``dfm``: :class:`LightBag` or :class:`Bag`) of P,
    I and D, then the segmentation head (``final_layer``). The pooling module's
    output channels are those of ``"p"``, so the layers are made in :meth:`build`.

    Args:
        num_classes: output channels (1: binary with a sigmoid).
        ppm_channels: branch channels of the pooling module (96 in PIDNet-S and
            -M, 112 in PIDNet-L).
        head_channels: channels of the segmentation head's 3x3 convolution
            (128 in PIDNet-S and -M, 256 in PIDNet-L).
        ppm: ``"pappm"`` (PIDNet-S, -M) or ``"dappm"`` (PIDNet-L).
        fusion: ``"light_bag"`` (PIDNet-S, -M) or ``"bag"`` (PIDNet-L).

    Shape: ``{"i": (B, H/64, W/64, C_i), "p": (B, H/8, W/8, C), "d": (B, H/8, W/8, C), ...}
    -> (B, H/8, W/8, num_classes)`` logits, output stride 8.
    """

    def __init__(self, num_classes, ppm_channels=96, head_channels=128, ppm="pappm", fusion="light_bag",
                 **kwargs):
        super().__init__(**kwargs)
        if ppm not in PYRAMID_POOLING:
            raise ValueError(f"ppm must be one of {PYRAMID_POOLING}; got {ppm!r}.")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}; got {fusion!r}.")
        self.num_classes = num_classes
        self.ppm_channels = ppm_channels
        self.head_channels = head_channels
        self.ppm = ppm
        self.fusion = fusion
        self.resize = ResizeLike(dtype=self.dtype_policy, name="resize")
        self.final_layer = DDRNetSegmentHead(num_classes, head_channels, dtype=self.dtype_policy,
                                             name="final_layer")
        self.spp = self.dfm = None

    def build(self, input_shape):
        channels = input_shape["p"][-1]
        spp_class = PAPPM if self.ppm == "pappm" else DAPPM
        self.spp = spp_class(self.ppm_channels, channels, dtype=self.dtype_policy, name="spp")
        self.spp.build(input_shape["i"])
        fusion_class = LightBag if self.fusion == "light_bag" else Bag
        self.dfm = fusion_class(channels, dtype=self.dtype_policy, name="dfm")
        shape = input_shape["p"]
        self.dfm.build([shape, shape, shape])
        self.final_layer.build(shape)
        self.built = True

    def call(self, features, training=None):
        detail = features["p"]
        context = self.resize([self.spp(features["i"], training=training), detail])
        fused = self.dfm([detail, context, features["d"]], training=training)
        return self.final_layer(fused, training=training)

    def compute_output_shape(self, input_shape):
        return (*input_shape["p"][:-1], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, ppm_channels=self.ppm_channels,
                      head_channels=self.head_channels, ppm=self.ppm, fusion=self.fusion)
        return config
