"""Convolution + batch norm + activation blocks."""

import keras

# PyTorch's BatchNorm defaults (momentum 0.1 there is 0.9 here, eps 1e-5): the
# models of this zoo follow the official PyTorch code, and converted weights
# only reproduce its outputs with the same epsilon.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="segzoo")
class ConvBNAct(keras.layers.Layer):
    """Conv2D (no bias) -> BatchNormalization -> activation.

    Args:
        filters: output channels.
        kernel_size: int or (kh, kw).
        strides: convolution stride.
        dilation_rate: atrous rate.
        activation: a Keras activation name or None for none.
        use_bias: add a bias to the convolution (off: the norm has one).
        padding: "same" or "valid".

    Shape: ``(B, H, W, C_in) -> (B, H / strides, W / strides, filters)``.
    """

    #: (convolution, batch norm) attribute pairs that :func:`segzoo.folding.fold_batch_norm` merges.
    batch_norm_pairs = (("conv", "bn"),)

    def __init__(self, filters, kernel_size=3, strides=1, dilation_rate=1,
                 activation="relu", use_bias=False, padding="same", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.dilation_rate = dilation_rate
        self.activation = activation
        self.use_bias = use_bias
        self.padding = padding
        self.conv = keras.layers.Conv2D(
            filters, kernel_size, strides=strides, dilation_rate=dilation_rate,
            padding=padding, use_bias=use_bias, dtype=self.dtype_policy, name="conv")
        self.bn = keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=self.dtype_policy, name="bn")
        self.act = (keras.layers.Activation(activation, dtype=self.dtype_policy, name="act")
                    if activation else None)

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build(self.conv.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs, training=None):
        x = self.bn(self.conv(inputs), training=training)
        return self.act(x) if self.act is not None else x

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                      dilation_rate=self.dilation_rate, activation=self.activation,
                      use_bias=self.use_bias, padding=self.padding)
        return config


@keras.saving.register_keras_serializable(package="segzoo")
class SeparableConvBNAct(keras.layers.Layer):
    """Depthwise conv -> BN -> act -> pointwise 1x1 conv -> BN -> act.

    The depthwise-separable convolution of DeepLabV3+ (Chen et al. 2018, with
    batch norm and activation after both parts, unlike ``keras.layers.SeparableConv2D``).
    About ``k*k + filters`` multiply-adds per input channel and pixel instead of
    ``k*k*filters``.

    Args:
        filters: output channels.
        kernel_size: depthwise kernel size.
        strides: depthwise stride.
        dilation_rate: depthwise atrous rate.
        activation: activation after both parts (None for none).

    Shape: ``(B, H, W, C_in) -> (B, H / strides, W / strides, filters)``.
    """

    #: (convolution, batch norm) attribute pairs that :func:`segzoo.folding.fold_batch_norm` merges.
    batch_norm_pairs = (("depthwise", "depthwise_bn"),)

    def __init__(self, filters, kernel_size=3, strides=1, dilation_rate=1,
                 activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.dilation_rate = dilation_rate
        self.activation = activation
        self.depthwise = keras.layers.DepthwiseConv2D(
            kernel_size, strides=strides, dilation_rate=dilation_rate, padding="same",
            use_bias=False, dtype=self.dtype_policy, name="depthwise")
        self.depthwise_bn = keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=self.dtype_policy, name="depthwise_bn")
        self.pointwise = ConvBNAct(filters, 1, activation=activation,
                                   dtype=self.dtype_policy, name="pointwise")
        self.act = (keras.layers.Activation(activation, dtype=self.dtype_policy, name="act")
                    if activation else None)

    def build(self, input_shape):
        self.depthwise.build(input_shape)
        depthwise_shape = self.depthwise.compute_output_shape(input_shape)
        self.depthwise_bn.build(depthwise_shape)
        self.pointwise.build(depthwise_shape)
        self.built = True

    def call(self, inputs, training=None):
        x = self.depthwise_bn(self.depthwise(inputs), training=training)
        if self.act is not None:
            x = self.act(x)
        return self.pointwise(x, training=training)

    def compute_output_shape(self, input_shape):
        return self.pointwise.compute_output_shape(self.depthwise.compute_output_shape(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                      dilation_rate=self.dilation_rate, activation=self.activation)
        return config
