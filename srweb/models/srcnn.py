"""SRCNN.

Chao Dong, Chen Change Loy, Kaiming He, Xiaoou Tang. "Learning a Deep Convolutional Network
for Image Super-Resolution", ECCV 2014; extended as "Image Super-Resolution Using Deep
Convolutional Networks", TPAMI 2016.

Three convolutions (patch extraction, non-linear mapping, reconstruction) on the bicubic
upscaled Y channel. Zero 'same' padding replaces the paper's valid convolutions so the output
keeps the input size. Parameters: 57,281 for 9-5-5 (paper ~57K), 8,129 for 9-1-5 (~8K).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from srweb.models._blocks import conv
from srweb.models._registry import register_model


class SRCNN(nn.Module):
    """SRCNN f1-f2-f3 with n1, n2 filters.

    Args:
        in_channels: 1 (Y) or 3 (RGB).
        kernel_sizes: (f1, f2, f3), e.g. (9, 5, 5) or (9, 1, 5).
        num_features: (n1, n2) filters of the two hidden layers.
    """

    def __init__(
        self, in_channels: int = 1, kernel_sizes: Sequence[int] = (9, 5, 5), num_features: Sequence[int] = (64, 32)
    ) -> None:
        super().__init__()
        f1, f2, f3 = kernel_sizes
        n1, n2 = num_features
        self.head = nn.Sequential(conv(in_channels, n1, f1), nn.ReLU(inplace=True))
        self.body = nn.Sequential(conv(n1, n2, f2), nn.ReLU(inplace=True))
        self.tail = conv(n2, in_channels, f3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(self.head(x)))


@register_model(
    "srcnn",
    paper_set5={2: 36.66, 3: 32.75, 4: 30.48},
    paper="Dong, Loy, He, Tang: Image Super-Resolution Using Deep Convolutional Networks (ECCV 2014, TPAMI 2016)",
    year=2014,
    input_kind="y",
    upsampling="pre",
    defaults={"in_channels": 1, "kernel_sizes": (9, 5, 5), "num_features": (64, 32)},
)
def srcnn(scale: int, **config) -> nn.Module:
    """SRCNN: three-layer CNN on the bicubic-upscaled image."""
    return SRCNN(**config)
