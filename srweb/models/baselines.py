"""Parameterless interpolation baselines: MATLAB bicubic (the reference of every SR paper) and
nearest neighbour. Outputs are clamped to [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from srweb.models._registry import register_model


class Bicubic(nn.Module):
    """MATLAB-compatible bicubic upscaling (``srweb.imaging.resize.imresize``)."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from srweb.imaging.resize import imresize  # lazy: keeps the registry import free of the resize module

        y = imresize(x.float(), scale=self.scale)
        return y.clamp(0, 1).to(x.dtype)


class Nearest(nn.Module):
    """Nearest-neighbour upscaling (pixel replication)."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="nearest").clamp(0, 1)


@register_model(
    "bicubic",
    paper="Keys: Cubic Convolution Interpolation for Digital Image Processing (IEEE TASSP 1981); MATLAB imresize",
    year=1981,
    input_kind="rgb",
    upsampling="post",
    trainable=False,
)
def bicubic(scale: int) -> nn.Module:
    """Bicubic interpolation (MATLAB imresize), the standard SR baseline."""
    return Bicubic(scale)


@register_model(
    "nearest", paper="Nearest-neighbour interpolation", year=0, input_kind="rgb", upsampling="post", trainable=False
)
def nearest(scale: int) -> nn.Module:
    """Nearest-neighbour interpolation (pixel replication)."""
    return Nearest(scale)
