"""PIDNet's three-branch trunk (Xu et al., CVPR 2023, arXiv 2206.02066), the official layout.

PIDNet extends DDRNet's dual-resolution design with a third branch, after a PID
controller: the I (integral, context) branch goes down to stride 64 like
DDRNet's low branch; the P (proportional, detail) branch stays at stride 8 and
takes context through two pixel-attention-guided fusions (``pag3``, ``pag4``,
official ``PagFM``); the D (derivative, boundary) branch, also at stride 8,
adds the I branch's ``diff3``/``diff4`` projections and feeds the boundary
head that exists only in training. Official code: github.com/XuJiacong/PIDNet,
``models/pidnet.py`` and ``models/model_utils.py`` (MIT licence).

Layer names follow the official module paths with ``.`` replaced by ``_``, as
in :mod:`segzoo.backbones.ddrnet` (same builder): ``layer3_d.conv1`` is
``layer3_d_conv1``, ``pag3.f_x.0`` is ``pag3_f_x_0``, ``diff4.1`` is
``diff4_1``; ``PIDNetBackbone.official_paths`` keeps the exact path of every
layer with weights, so a checkpoint converts by a name map
(:mod:`segzoo.backbones.pidnet_weights`). Layers without a module of their own
add a suffix: ``<module>_relu``, ``<diff>_resize``/``<diff>_fuse`` (the D
branch's additions), ``pag3`` (the fusion's attention, :class:`PagFusion`).

Blocks and ReLUs as in the official ``_make_layer``: the last BasicBlock of a
layer has no final ReLU; Bottleneck blocks never have one (their default
``no_relu=True``), nor do the single blocks of ``_make_single_layer``.
"""

import keras
from keras import ops

from segzoo.backbones.base import Backbone
from segzoo.backbones.ddrnet import _TrunkBuilder, keras_name
from segzoo.layers import ImageNormalization, ResizeLike

#: The three variants of the paper: (m, n, planes) of the official ``get_pred_model``.
#: ``m``: BasicBlocks in layer1, layer2 and the P branch's layer3_/layer4_;
#: ``n``: BasicBlocks in the I branch's layer3 and layer4.
PIDNET_VARIANTS = {
    "pidnet_s": {"m": 2, "n": 3, "planes": 32},
    "pidnet_m": {"m": 2, "n": 3, "planes": 64},
    "pidnet_l": {"m": 3, "n": 4, "planes": 64},
}


@keras.saving.register_keras_serializable(package="segzoo")
class PagFusion(keras.layers.Layer):
    """The attention part of PIDNet's ``PagFM``: blends the P branch with the upsampled I branch.

    ``layer([x, x_k, y_q, y])`` with ``x`` the P branch ``(B, H, W, C)``,
    ``x_k = f_x(x)`` ``(B, H, W, M)``, ``y_q = f_y(y)`` ``(B, h, w, M)`` and
    ``y`` the I branch ``(B, h, w, C)``: ``y_q`` and ``y`` are resized
    (bilinear, half-pixel) to ``x``'s size, ``s = sigmoid(sum_c(x_k * y_q))``
    per pixel, and the output is ``(1 - s) * x + s * y``, ``(B, H, W, C)``.
    The 1x1 conv + BN projections ``f_x``, ``f_y`` are separate layers of the
    trunk (so batch-norm folding sees them). No weights.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.resize = ResizeLike(dtype=self.dtype_policy, name="resize")

    def call(self, inputs):
        x, x_k, y_q, y = inputs
        y_q = self.resize([y_q, x])
        y = self.resize([y, x])
        similarity = ops.sigmoid(ops.sum(x_k * y_q, axis=-1, keepdims=True))
        return (1.0 - similarity) * x + similarity * y

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]


@keras.saving.register_keras_serializable(package="segzoo")
class PIDNetBackbone(Backbone):
    """PIDNet's trunk: the I, P and D branches, from RGB images to the inputs of its heads.

    Input: float ``(B, H, W, 3)``, RGB 0..255, ``H`` and ``W`` multiples of 8;
    the first layer normalises with ImageNet's mean and standard deviation, as
    the official weights expect. Outputs (no ReLU applied, as the official
    heads take them), with ``p = planes``:

    - ``"p"``: the P branch after ``layer5_``, ``(B, H/8, W/8, 4p)``, stride 8;
    - ``"i"``: the I branch after ``layer5``, ``(B, H/64, W/64, 16p)``, stride 64
      (sizes rounded up), the input of the pyramid pooling module;
    - ``"d"``: the D branch after ``layer5_d``, ``(B, H/8, W/8, 4p)``, stride 8;
    - ``"p_stage3"``: the P branch after ``pag3``, ``(B, H/8, W/8, 2p)``, the
      input of the training-only auxiliary head (official ``temp_p``);
    - ``"d_stage4"``: the D branch after the ``diff4`` addition,
      ``(B, H/8, W/8, 2p)``, the input of the training-only boundary head
      (official ``temp_d``).

    Args:
        m: BasicBlocks of layer1, layer2, layer3_ and layer4_ (2 in PIDNet-S/M,
            3 in PIDNet-L, which also has a wider D branch).
        n: BasicBlocks of layer3 and layer4 (3 in PIDNet-S/M, 4 in PIDNet-L).
        planes: channels of the stem and layer1 (32 in PIDNet-S, 64 in M and L).
        input_shape: ``(H, W, 3)``; ``None`` for sizes chosen at run time.
        **kwargs: ``name``, ``trainable``.

    See :data:`PIDNET_VARIANTS` for the paper's three configurations.
    """

    size_divisor = 8

    def __init__(self, m=2, n=3, planes=32, input_shape=(None, None, 3), **kwargs):
        if m < 2 or n < 2:
            raise ValueError(f"m and n must be >= 2 (the official layouts: 2-3); got m={m}, n={n}.")
        p = planes
        images = keras.Input(tuple(input_shape), name="images")
        x = ImageNormalization(name="normalization")(images)
        trunk = _TrunkBuilder()
        for index in (0, 3):  # conv1 = Sequential(conv, BN, ReLU, conv, BN, ReLU); convs with bias
            x = trunk.conv(x, p, 3, f"conv1.{index}", strides=2, use_bias=True)
            x = trunk.relu(trunk.bn(x, f"conv1.{index + 1}"), f"conv1_{index + 2}")
        x = trunk.layer(x, p, m, "layer1")
        x = trunk.relu(trunk.layer(trunk.relu(x, "layer1_relu"), 2 * p, m, "layer2", strides=2), "layer2_relu")

        def bottlenecks(y, filters, blocks, path, strides=1):
            for index in range(blocks):  # Bottleneck blocks: no final ReLU
                y = trunk.block(y, filters, f"{path}.{index}", strides if index == 0 else 1,
                                bottleneck=True, final_relu=False)
            return y

        def projection(y, filters, kernel_size, path):
            return trunk.bn(trunk.conv(y, filters, kernel_size, f"{path}.0"), f"{path}.1")

        def pag(x_p, y_i, path):
            y_q = projection(y_i, p, 1, f"{path}.f_y")
            x_k = projection(x_p, p, 1, f"{path}.f_x")
            return PagFusion(name=path)([x_p, x_k, y_q, y_i])

        def add_diff(x_d, y_i, filters, path):
            z = ResizeLike(name=f"{path}_resize")([projection(y_i, filters, 3, path), x_d])
            return keras.layers.Add(name=f"{path}_fuse")([x_d, z])

        # Stage 3: the P and D branches start from relu(layer2), the I branch goes to stride 16.
        x_p = trunk.layer(x, 2 * p, m, "layer3_")
        x_d = trunk.block(x, p if m == 2 else 2 * p, "layer3_d", final_relu=False)
        x = trunk.relu(trunk.layer(x, 4 * p, n, "layer3", strides=2), "layer3_relu")
        x_p = pag(x_p, projection(x, 2 * p, 1, "compression3"), "pag3")
        x_d = add_diff(x_d, x, p if m == 2 else 2 * p, "diff3")
        p_stage3 = x_p

        # Stage 4.
        x = trunk.relu(trunk.layer(x, 8 * p, n, "layer4", strides=2), "layer4_relu")
        x_p = trunk.layer(trunk.relu(x_p, "pag3_relu"), 2 * p, m, "layer4_")
        x_d = trunk.relu(x_d, "diff3_fuse_relu")
        if m == 2:
            x_d = bottlenecks(x_d, p, 1, "layer4_d")
        else:
            x_d = trunk.block(x_d, 2 * p, "layer4_d", final_relu=False)
        x_p = pag(x_p, projection(x, 2 * p, 1, "compression4"), "pag4")
        x_d = add_diff(x_d, x, 2 * p, "diff4")
        d_stage4 = x_d

        # Stage 5.
        x_p = bottlenecks(trunk.relu(x_p, "pag4_relu"), 2 * p, 1, "layer5_")
        x_d = bottlenecks(trunk.relu(x_d, "diff4_fuse_relu"), 2 * p, 1, "layer5_d")
        x = bottlenecks(x, 8 * p, 2, "layer5", strides=2)

        super().__init__(images, {"p": x_p, "i": x, "d": x_d, "p_stage3": p_stage3, "d_stage4": d_stage4},
                         {"p": 8, "i": 64, "d": 8, "p_stage3": 8, "d_stage4": 8}, **kwargs)
        self.m, self.n, self.planes = int(m), int(n), int(planes)
        self.image_shape = tuple(input_shape)
        #: Keras layer name -> official PyTorch module path, for every layer with weights.
        self.official_paths = trunk.official_paths

    def get_config(self):
        return {**super().get_config(), "m": self.m, "n": self.n, "planes": self.planes,
                "input_shape": list(self.image_shape)}


__all__ = ["PIDNET_VARIANTS", "PIDNetBackbone", "PagFusion", "keras_name"]
