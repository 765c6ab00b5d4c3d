"""VDSR.

Jiwon Kim, Jung Kwon Lee, Kyoung Mu Lee. "Accurate Image Super-Resolution Using Very Deep
Convolutional Networks", CVPR 2016.

20 layers of 3x3x64 convolutions with ReLU predict the residual that is added to the bicubic
upscaled input. Parameters: 665,921 (paper ~665K).
"""

from __future__ import annotations

import torch
from torch import nn

from srweb.models._blocks import conv, init_he
from srweb.models._registry import register_model


class VDSR(nn.Module):
    """Very deep residual CNN.

    Args:
        in_channels: 1 (Y) or 3.
        num_features: filters per hidden layer.
        num_layers: total conv layers (20 in the paper).
    """

    def __init__(self, in_channels: int = 1, num_features: int = 64, num_layers: int = 20) -> None:
        super().__init__()
        self.head = nn.Sequential(conv(in_channels, num_features), nn.ReLU(inplace=True))
        body: list[nn.Module] = []
        for _ in range(num_layers - 2):
            body += [conv(num_features, num_features), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*body)
        self.tail = conv(num_features, in_channels)
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.tail(self.body(self.head(x)))


@register_model(
    "vdsr",
    paper_set5={2: 37.53, 3: 33.66, 4: 31.35},
    paper="Kim, Lee, Lee: Accurate Image Super-Resolution Using Very Deep Convolutional Networks (CVPR 2016)",
    year=2016,
    input_kind="y",
    upsampling="pre",
    defaults={"in_channels": 1, "num_features": 64, "num_layers": 20},
)
def vdsr(scale: int, **config) -> nn.Module:
    """VDSR: 20-layer residual CNN on the bicubic-upscaled image."""
    return VDSR(**config)
