"""Backbones: functional models from RGB 0..255 images to a dict of feature maps."""

from segzoo.backbones.base import Backbone
from segzoo.backbones.ddrnet import DDRNetBackbone
from segzoo.backbones.efficientnet import EfficientNetBackbone
from segzoo.backbones.mobilenetv3 import MobileNetV3Backbone
from segzoo.backbones.pidnet import PIDNetBackbone

__all__ = ["Backbone", "DDRNetBackbone", "EfficientNetBackbone", "MobileNetV3Backbone", "PIDNetBackbone"]
