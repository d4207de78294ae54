"""Layers the methods share that detectron2 and torchvision do not provide as such."""

from .deform_conv import DeformableConv3x3

__all__ = ["DeformableConv3x3"]
