"""EDSR and EDSR-baseline.

Bee Lim, Sanghyun Son, Heewon Kim, Seungjun Nah, Kyoung Mu Lee. "Enhanced Deep Residual
Networks for Single Image Super-Resolution", CVPR Workshops (NTIRE) 2017.

RGB mean shift (DIV2K mean, [0, 1] range), head conv, residual blocks without BN
(conv-ReLU-conv, scaled by ``res_scale``), a body conv with a long skip, a pixel-shuffle
upsampler (x2, x3 in one step; x4 as two x2 steps) and a tail conv.

Parameters (x2 / x3 / x4):
    edsr-baseline (16 blocks, 64 features, res_scale 1):  1,369,859 / 1,554,499 / 1,517,571
    edsr (32 blocks, 256 features, res_scale 0.1):       40,729,603 / 43,680,003 / 43,089,923
Paper: 1.37M / - / 1.52M and 40.7M / - / 43.1M.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from srweb.models._blocks import MeanShift, PixelShuffleUpsampler, conv
from srweb.models._registry import register_model

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class ResBlock(nn.Module):
    """conv-ReLU-conv residual block without BN, residual scaled by ``res_scale``."""

    def __init__(self, num_features: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(num_features, num_features), nn.ReLU(inplace=True), conv(num_features, num_features)
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class EDSR(nn.Module):
    """Enhanced deep residual network.

    Args:
        scale: 2, 3 or 4.
        in_channels: 3 (RGB); 1 works if ``rgb_mean`` has one value.
        num_features: filters of every conv.
        num_blocks: residual blocks.
        res_scale: residual scaling (0.1 stabilises the wide model).
        rgb_mean: per-channel mean subtracted at the input and added back at the output.
    """

    def __init__(
        self,
        scale: int,
        in_channels: int = 3,
        num_features: int = 64,
        num_blocks: int = 16,
        res_scale: float = 1.0,
        rgb_mean: Sequence[float] = DIV2K_RGB_MEAN,
    ) -> None:
        super().__init__()
        if len(rgb_mean) != in_channels:
            raise ValueError(f"rgb_mean needs {in_channels} values, got {len(rgb_mean)}")
        self.sub_mean = MeanShift(rgb_mean, sign=-1)
        self.head = conv(in_channels, num_features)
        self.body = nn.Sequential(
            *(ResBlock(num_features, res_scale) for _ in range(num_blocks)), conv(num_features, num_features)
        )
        self.upsample = PixelShuffleUpsampler(scale, num_features)
        self.tail = conv(num_features, in_channels)
        self.add_mean = MeanShift(rgb_mean, sign=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(self.sub_mean(x))
        h = h + self.body(h)
        return self.add_mean(self.tail(self.upsample(h)))


_PAPER = "Lim, Son, Kim, Nah, Lee: Enhanced Deep Residual Networks for Single Image Super-Resolution (CVPRW 2017)"


@register_model(
    "edsr-baseline",
    paper_set5={2: 37.99, 4: 32.09},
    paper=_PAPER,
    year=2017,
    input_kind="rgb",
    upsampling="post",
    defaults={"in_channels": 3, "num_features": 64, "num_blocks": 16, "res_scale": 1.0, "rgb_mean": DIV2K_RGB_MEAN},
)
def edsr_baseline(scale: int, **config) -> nn.Module:
    """EDSR-baseline: 16 residual blocks, 64 features."""
    return EDSR(scale, **config)


@register_model(
    "edsr",
    paper_set5={2: 38.11, 3: 34.65, 4: 32.46},
    paper=_PAPER,
    year=2017,
    input_kind="rgb",
    upsampling="post",
    defaults={"in_channels": 3, "num_features": 256, "num_blocks": 32, "res_scale": 0.1, "rgb_mean": DIV2K_RGB_MEAN},
)
def edsr(scale: int, **config) -> nn.Module:
    """EDSR: 32 residual blocks, 256 features, residual scaling 0.1."""
    return EDSR(scale, **config)
