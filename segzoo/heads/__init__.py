"""Heads: layers from a backbone's feature dict to logits at some stride."""

from segzoo.heads.ddrnet import DAPPM, DDRNetHead, DDRNetSegmentHead
from segzoo.heads.deeplabv3plus import ASPP, DeepLabV3PlusHead
from segzoo.heads.pidnet import PAPPM, Bag, LightBag, PIDNetHead

__all__ = ["ASPP", "Bag", "DAPPM", "DDRNetHead", "DDRNetSegmentHead", "DeepLabV3PlusHead", "LightBag", "PAPPM", "PIDNetHead"]
