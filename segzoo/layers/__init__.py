"""Shared building blocks: the bricks every backbone and head is made of."""

from segzoo.layers.conv import ConvBNAct, SeparableConvBNAct
from segzoo.layers.normalization import ImageNormalization
from segzoo.layers.resize import ResizeLike

__all__ = ["ConvBNAct", "SeparableConvBNAct", "ImageNormalization", "ResizeLike"]
