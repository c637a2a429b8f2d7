"""DDRNet's heads: DAPPM, the segmentation head, and the two joined on the trunk's branches.

Layer names follow the official PyTorch modules (ydhongHIT/DDRNet) with ``.``
replaced by ``_``, as in :mod:`segzoo.backbones.ddrnet`: in :class:`DAPPM`,
``scale1.1`` (a batch norm) is ``scale1_1`` and ``scale1.3`` (its 1x1
convolution) is ``scale1_3``; in :class:`DDRNetSegmentHead`, ``bn1``, ``conv1``,
``bn2``, ``conv2``. :class:`DDRNetHead` holds them as ``spp`` and
``final_layer``, the official attribute names.
"""

import keras
from keras import ops

from segzoo.layers import ResizeLike
from segzoo.layers.conv import BN_EPSILON, BN_MOMENTUM

#: Average pooling of DAPPM's scale1..scale3: (kernel, stride, padding), PyTorch's AvgPool2d.
DAPPM_POOLS = ((5, 2, 2), (9, 4, 4), (17, 8, 8))


def _batch_norm(name, dtype):
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                           dtype=dtype, name=name)


def _conv(filters, kernel_size, name, dtype, use_bias=False):
    return keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=use_bias,
                               dtype=dtype, name=name)


@keras.saving.register_keras_serializable(package="segzoo")
class DAPPM(keras.layers.Layer):
    """Deep Aggregation Pyramid Pooling Module (DDRNet's context module).

    Five branches on the input: ``scale0`` (none), ``scale1..scale3`` (average
    pooling k5 s2, k9 s4, k17 s8, zero padding counted in the average as
    PyTorch's ``AvgPool2d`` does) and ``scale4`` (global average), each
    BN-ReLU-conv1x1 to ``branch_channels``. Each pooled branch is resized back
    (bilinear, half-pixel), added to the previous branch's output and refined
    by BN-ReLU-conv3x3 (``process1..process4``). The five outputs are
    concatenated and compressed by BN-ReLU-conv1x1 to ``out_channels``
    (``compression``), plus a BN-ReLU-conv1x1 ``shortcut`` of the input.

    Every resize takes its size from a tensor (:class:`ResizeLike`), and the
    global pooling is a keras layer: no shape arithmetic in Python, so the
    module exports to ONNX and LiteRT with static or dynamic sizes.

    Args:
        branch_channels: channels of each branch (128 in every DDRNet).
        out_channels: output channels.

    Shape: ``(B, h, w, C) -> (B, h, w, out_channels)``, same stride as the input.
    """

    def __init__(self, branch_channels=128, out_channels=128, **kwargs):
        super().__init__(**kwargs)
        self.branch_channels = branch_channels
        self.out_channels = out_channels
        dtype = self.dtype_policy
        # Official Sequential indices: [pool,] BN, ReLU, conv (scale0 has no pool).
        self.scale_norms = [_batch_norm("scale0_0", dtype)] + [
            _batch_norm(f"scale{i}_1", dtype) for i in range(1, 5)]
        self.scale_convs = [_conv(branch_channels, 1, "scale0_2", dtype)] + [
            _conv(branch_channels, 1, f"scale{i}_3", dtype) for i in range(1, 5)]
        self.paddings = [keras.layers.ZeroPadding2D(padding, dtype=dtype, name=f"scale{i}_0_pad")
                         for i, (_, _, padding) in enumerate(DAPPM_POOLS, start=1)]
        self.pools = [keras.layers.AveragePooling2D(kernel, stride, padding="valid", dtype=dtype,
                                                    name=f"scale{i}_0")
                      for i, (kernel, stride, _) in enumerate(DAPPM_POOLS, start=1)]
        self.global_pool = keras.layers.GlobalAveragePooling2D(keepdims=True, dtype=dtype, name="scale4_0")
        self._make_refinement(branch_channels, dtype)
        self.compression_norm = _batch_norm("compression_0", dtype)
        self.compression_conv = _conv(out_channels, 1, "compression_2", dtype)
        self.shortcut_norm = _batch_norm("shortcut_0", dtype)
        self.shortcut_conv = _conv(out_channels, 1, "shortcut_2", dtype)
        self.resize = ResizeLike(dtype=dtype, name="resize")

    def build(self, input_shape):
        in_shape = (None, None, None, input_shape[-1])
        for layer in (*self.scale_norms, *self.scale_convs, self.shortcut_norm, self.shortcut_conv):
            layer.build(in_shape)
        self._build_refinement()
        concat_shape = (None, None, None, 5 * self.branch_channels)
        self.compression_norm.build(concat_shape)
        self.compression_conv.build(concat_shape)
        self.built = True

    def _bn_relu_conv(self, x, norm, conv, training):
        return conv(ops.relu(norm(x, training=training)))

    # -- the refinement of the pooled branches: sequential here, parallel in PIDNet's PAPPM --------

    def _make_refinement(self, branch_channels, dtype):
        self.process_norms = [_batch_norm(f"process{i}_0", dtype) for i in range(1, 5)]
        self.process_convs = [_conv(branch_channels, 3, f"process{i}_2", dtype) for i in range(1, 5)]

    def _build_refinement(self):
        branch_shape = (None, None, None, self.branch_channels)
        for norm, conv in zip(self.process_norms, self.process_convs):
            norm.build(branch_shape)
            conv.build(branch_shape)

    def _refine(self, base, branches, training):
        """``[base, refined branch 1..4]``: each branch plus the previous output, then BN-ReLU-conv3x3."""
        outputs = [base]
        for x, norm, conv in zip(branches, self.process_norms, self.process_convs):
            outputs.append(self._bn_relu_conv(x + outputs[-1], norm, conv, training))
        return outputs

    def call(self, inputs, training=None):
        pooled = [pool(pad(inputs)) for pad, pool in zip(self.paddings, self.pools)]
        pooled.append(self.global_pool(inputs))
        base = self._bn_relu_conv(inputs, self.scale_norms[0], self.scale_convs[0], training)
        branches = [self.resize([self._bn_relu_conv(x, norm, conv, training), inputs])
                    for x, norm, conv in zip(pooled, self.scale_norms[1:], self.scale_convs[1:])]
        x = ops.concatenate(self._refine(base, branches, training), axis=-1)
        return (self._bn_relu_conv(x, self.compression_norm, self.compression_conv, training)
                + self._bn_relu_conv(inputs, self.shortcut_norm, self.shortcut_conv, training))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.out_channels)

    def get_config(self):
        config = super().get_config()
        config.update(branch_channels=self.branch_channels, out_channels=self.out_channels)
        return config


@keras.saving.register_keras_serializable(package="segzoo")
class DDRNetSegmentHead(keras.layers.Layer):
    """DDRNet's segmentation head: BN-ReLU-conv3x3 then BN-ReLU-conv1x1 (with bias) to logits.

    A head in segzoo's sense: ``head(features)`` reads ``features[feature_key]``
    from the backbone's feature dict (it also takes a tensor directly, which is
    how :class:`DDRNetHead` uses it). Logits come at the stride of that
    feature; :class:`segzoo.models.SegmentationModel` resizes them to the input.
    As DDRNet's training-only auxiliary head it reads ``"high_stage3"``
    (stride 8), the official ``seghead_extra``.

    Args:
        num_classes: output channels (1: binary with a sigmoid).
        head_channels: channels of the 3x3 convolution (64 / 128 / 256 in
            DDRNet-23-slim / 23 / 39).
        feature_key: the feature read from a feature dict.

    Shape: ``(B, h, w, C) -> (B, h, w, num_classes)`` float logits.
    """

    def __init__(self, num_classes, head_channels=64, feature_key="high_stage3", **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.head_channels = head_channels
        self.feature_key = feature_key
        dtype = self.dtype_policy
        self.bn1 = _batch_norm("bn1", dtype)
        self.conv1 = _conv(head_channels, 3, "conv1", dtype)
        self.bn2 = _batch_norm("bn2", dtype)
        self.conv2 = _conv(num_classes, 1, "conv2", dtype, use_bias=True)

    def _select(self, inputs):
        return inputs[self.feature_key] if isinstance(inputs, dict) else inputs

    def build(self, input_shape):
        shape = self._select(input_shape)
        self.bn1.build(shape)
        self.conv1.build(shape)
        head_shape = (*shape[:-1], self.head_channels)
        self.bn2.build(head_shape)
        self.conv2.build(head_shape)
        self.built = True

    def call(self, inputs, training=None):
        x = self.conv1(ops.relu(self.bn1(self._select(inputs), training=training)))
        return self.conv2(ops.relu(self.bn2(x, training=training)))

    def compute_output_shape(self, input_shape):
        return (*self._select(input_shape)[:-1], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, head_channels=self.head_channels,
                      feature_key=self.feature_key)
        return config


@keras.saving.register_keras_serializable(package="segzoo")
class DDRNetHead(keras.layers.Layer):
    """DDRNet's head on :class:`segzoo.backbones.ddrnet.DDRNetBackbone` features.

    Reads ``features["low"]`` (stride 64) and ``features["high"]`` (stride 8):
    DAPPM (``spp``) on the low branch, a bilinear resize to the high branch's
    size, the sum with the high branch, then :class:`DDRNetSegmentHead`
    (``final_layer``). DAPPM's output channels are those of ``"high"`` (the
    sum needs them), so the layers are made in :meth:`build`.

    Args:
        num_classes: output channels (1: binary with a sigmoid).
        dappm_channels: DAPPM's branch channels (128 in every DDRNet).
        head_channels: channels of the segmentation head's 3x3 convolution.

    Shape: ``{"low": (B, H/64, W/64, C_low), "high": (B, H/8, W/8, C), ...}
    -> (B, H/8, W/8, num_classes)`` logits, output stride 8.
    """

    def __init__(self, num_classes, dappm_channels=128, head_channels=64, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.dappm_channels = dappm_channels
        self.head_channels = head_channels
        self.resize = ResizeLike(dtype=self.dtype_policy, name="resize")
        self.final_layer = DDRNetSegmentHead(num_classes, head_channels, dtype=self.dtype_policy,
                                             name="final_layer")
        self.spp = None

    def build(self, input_shape):
        high_shape = input_shape["high"]
        self.spp = DAPPM(self.dappm_channels, high_shape[-1], dtype=self.dtype_policy, name="spp")
        self.spp.build(input_shape["low"])
        self.final_layer.build(high_shape)
        self.built = True

    def call(self, features, training=None):
        high = features["high"]
        context = self.resize([self.spp(features["low"], training=training), high])
        return self.final_layer(context + high, training=training)

    def compute_output_shape(self, input_shape):
        return (*input_shape["high"][:-1], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, dappm_channels=self.dappm_channels,
                      head_channels=self.head_channels)
        return config
