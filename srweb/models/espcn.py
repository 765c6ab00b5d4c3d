"""ESPCN.

Wenzhe Shi, Jose Caballero, Ferenc Huszar, Johannes Totz, Andrew P. Aitken, Rob Bishop,
Daniel Rueckert, Zehan Wang. "Real-Time Single Image and Video Super-Resolution Using an
Efficient Sub-Pixel Convolutional Neural Network", CVPR 2016.

(f1, n1) = (5, 64), (f2, n2) = (3, 32), f3 = 3 with C r^2 outputs, tanh activations, then a
periodic shuffle (PixelShuffle). Parameters: 21,284 / 22,729 / 24,752 at x2 / x3 / x4.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from srweb.models._blocks import conv
from srweb.models._registry import register_model


class ESPCN(nn.Module):
    """Efficient sub-pixel CNN.

    Args:
        scale: upscaling factor r.
        in_channels: C, 1 (Y) or 3.
        num_features: (n1, n2) filters of the two hidden layers.
    """

    def __init__(self, scale: int, in_channels: int = 1, num_features: Sequence[int] = (64, 32)) -> None:
        super().__init__()
        n1, n2 = num_features
        self.head = nn.Sequential(conv(in_channels, n1, 5), nn.Tanh())
        self.body = nn.Sequential(conv(n1, n2, 3), nn.Tanh())
        self.upsample = nn.Sequential(conv(n2, in_channels * scale * scale, 3), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.body(self.head(x)))


@register_model(
    "espcn",
    paper_set5={3: 33.00, 4: 30.90},
    paper="Shi et al.: Real-Time Single Image and Video Super-Resolution Using an Efficient "
    "Sub-Pixel Convolutional Neural Network (CVPR 2016)",
    year=2016,
    input_kind="y",
    upsampling="post",
    defaults={"in_channels": 1, "num_features": (64, 32)},
)
def espcn(scale: int, **config) -> nn.Module:
    """ESPCN: three convolutions on the LR image and a sub-pixel shuffle."""
    return ESPCN(scale, **config)
