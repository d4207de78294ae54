"""Layers the methods share that detectron2 and torchvision do not provide as such."""

from .deform_conv import DeformableConv3x3
from .pooling import window_max, window_mean

__all__ = ["DeformableConv3x3", "window_max", "window_mean"]
