"""DeepLabV3+ (Chen et al. 2018): atrous spatial pyramid pooling and the decoder head."""

import keras

from segzoo.layers import ConvBNAct, ResizeLike, SeparableConvBNAct


def _check_rates(rates):
    rates = tuple(rates)
    if not all(isinstance(r, int) and r >= 1 for r in rates):
        raise ValueError(f"rates must be positive integers (atrous rates in pixels); got {rates}.")
    return rates


@keras.saving.register_keras_serializable(package="segzoo")
class ASPP(keras.layers.Layer):
    """Atrous spatial pyramid pooling: parallel branches at several receptive fields.

    Branches, each ``filters`` channels with batch norm and activation: one 1x1
    convolution, one 3x3 convolution per atrous rate, and image pooling (global
    average, 1x1 convolution, broadcast back to the map's size with
    :class:`~segzoo.layers.ResizeLike`, a resize of static size when the input
    size is known, so ONNX and LiteRT exports stay clean). The branches are
    concatenated, projected by a 1x1 convolution to ``filters`` and dropped out.

    Args:
        filters: channels of each branch and of the output.
        rates: atrous rates of the 3x3 branches, in pixels of the input map.
        separable: depthwise-separable 3x3 branches (:class:`SeparableConvBNAct`).
        dropout: dropout rate after the projection.
        activation: activation of every branch and of the projection.

    Shape: ``(B, H, W, C) -> (B, H, W, filters)``.
    """

    def __init__(self, filters=256, rates=(3, 6, 9), separable=False, dropout=0.1,
                 activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.rates = _check_rates(rates)
        self.separable = separable
        self.dropout = dropout
        self.activation = activation
        atrous = SeparableConvBNAct if separable else ConvBNAct
        policy = self.dtype_policy
        self.pointwise_branch = ConvBNAct(filters, 1, activation=activation, dtype=policy,
                                          name="pointwise")
        self.atrous_branches = [
            atrous(filters, 3, dilation_rate=rate, activation=activation, dtype=policy,
                   name=f"atrous_{index}")
            for index, rate in enumerate(self.rates)]
        self.image_pool = keras.layers.GlobalAveragePooling2D(keepdims=True, dtype=policy,
                                                              name="image_pool")
        self.image_pool_conv = ConvBNAct(filters, 1, activation=activation, dtype=policy,
                                         name="image_pool_conv")
        self.image_pool_resize = ResizeLike(dtype=policy, name="image_pool_resize")
        self.concat = keras.layers.Concatenate(axis=-1, dtype=policy, name="concat")
        self.project = ConvBNAct(filters, 1, activation=activation, dtype=policy, name="project")
        self.project_dropout = keras.layers.Dropout(dropout, dtype=policy, name="dropout")

    def build(self, input_shape):
        self.pointwise_branch.build(input_shape)
        for branch in self.atrous_branches:
            branch.build(input_shape)
        self.image_pool_conv.build((input_shape[0], 1, 1, input_shape[-1]))
        branches = len(self.atrous_branches) + 2
        self.project.build((*input_shape[:-1], branches * self.filters))
        self.built = True

    def call(self, inputs, training=None):
        branches = [self.pointwise_branch(inputs, training=training)]
        branches += [branch(inputs, training=training) for branch in self.atrous_branches]
        pooled = self.image_pool_conv(self.image_pool(inputs), training=training)
        branches.append(self.image_pool_resize([pooled, inputs]))
        x = self.project(self.concat(branches), training=training)
        return self.project_dropout(x, training=training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, rates=list(self.rates), separable=self.separable,
                      dropout=self.dropout, activation=self.activation)
        return config


@keras.saving.register_keras_serializable(package="segzoo")
class DeepLabV3PlusHead(keras.layers.Layer):
    """The DeepLabV3+ head: ASPP on a deep level, a decoder with a shallow skip, a classifier.

    Reads two levels of the backbone's feature dict: ``high_level`` (ASPP) and
    ``low_level`` (the skip). The ASPP output is resized to the skip's size and
    concatenated with a ``low_level_channels`` 1x1 projection of it; two 3x3
    convolutions of ``decoder_channels`` and a 1x1 classifier (with bias) give
    logits at the low level's stride (4 for the default ``"P2"``);
    :class:`~segzoo.models.SegmentationModel` resizes them to the input.

    Atrous rates: ``keras.applications`` backbones cannot dilate their last
    stage, so ``"P5"`` is at output stride 32, not the paper's 16. The default
    rates (3, 6, 9) are the paper's (6, 12, 18) at stride 16 halved: the same
    receptive fields in image pixels. ASPP on ``"P4"`` (stride 16, the paper's
    rates) would skip the last stage, where most of a backbone's capacity is.

    Args:
        num_classes: output channels: 1 for binary (sigmoid), else the classes.
        high_level: feature key that ASPP reads.
        low_level: feature key of the decoder's skip connection.
        aspp_channels: channels of the ASPP branches and output.
        rates: ASPP atrous rates, in pixels of the ``high_level`` map.
        low_level_channels: channels of the skip's 1x1 projection (48 in the paper).
        decoder_channels: channels of the two 3x3 decoder convolutions.
        dropout: dropout rate after the ASPP projection.
        separable: depthwise-separable atrous branches and decoder convolutions
            (the paper's efficient variant).
        activation: activation of every convolution but the classifier.

    Shape: ``{high_level: (B, h, w, C), low_level: (B, H, W, C')} -> (B, H, W, num_classes)``.
    """

    def __init__(self, num_classes, high_level="P5", low_level="P2", aspp_channels=256,
                 rates=(3, 6, 9), low_level_channels=48, decoder_channels=256, dropout=0.1,
                 separable=False, activation="relu", **kwargs):
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}.")
        self.num_classes = num_classes
        self.high_level = high_level
        self.low_level = low_level
        self.aspp_channels = aspp_channels
        self.rates = _check_rates(rates)
        self.low_level_channels = low_level_channels
        self.decoder_channels = decoder_channels
        self.dropout = dropout
        self.separable = separable
        self.activation = activation
        policy = self.dtype_policy
        self.aspp = ASPP(aspp_channels, self.rates, separable=separable, dropout=dropout,
                         activation=activation, dtype=policy, name="aspp")
        self.low_level_project = ConvBNAct(low_level_channels, 1, activation=activation,
                                           dtype=policy, name="low_level_project")
        self.upsample = ResizeLike(dtype=policy, name="upsample")
        self.concat = keras.layers.Concatenate(axis=-1, dtype=policy, name="concat")
        decoder_conv = SeparableConvBNAct if separable else ConvBNAct
        self.decoder = [decoder_conv(decoder_channels, 3, activation=activation, dtype=policy,
                                     name=f"decoder_{index}") for index in range(2)]
        self.classifier = keras.layers.Conv2D(num_classes, 1, use_bias=True, dtype=policy,
                                              name="classifier")

    def build(self, input_shape):
        missing = {self.high_level, self.low_level} - set(input_shape)
        if missing:
            raise ValueError(f"{self.name}: the backbone has no features {sorted(missing)}; it "
                             f"has {sorted(input_shape)}. Set high_level and low_level.")
        self.aspp.build(input_shape[self.high_level])
        low_shape = tuple(input_shape[self.low_level])
        self.low_level_project.build(low_shape)
        self.decoder[0].build((*low_shape[:-1], self.aspp_channels + self.low_level_channels))
        self.decoder[1].build((*low_shape[:-1], self.decoder_channels))
        self.classifier.build((*low_shape[:-1], self.decoder_channels))
        self.built = True

    def call(self, features, training=None):
        context = self.aspp(features[self.high_level], training=training)
        skip = self.low_level_project(features[self.low_level], training=training)
        x = self.concat([self.upsample([context, skip]), skip])
        for conv in self.decoder:
            x = conv(x, training=training)
        return self.classifier(x)

    def compute_output_shape(self, input_shape):
        return (*input_shape[self.low_level][:-1], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, high_level=self.high_level, low_level=self.low_level,
            aspp_channels=self.aspp_channels, rates=list(self.rates),
            low_level_channels=self.low_level_channels, decoder_channels=self.decoder_channels,
            dropout=self.dropout, separable=self.separable, activation=self.activation)
        return config
