"""Building blocks shared by several architectures."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn


def conv(in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True) -> nn.Conv2d:
    """Stride-1 convolution with 'same' zero padding (odd kernel sizes)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


def init_he(module: nn.Module, negative_slope: float = 0.0) -> None:
    """He (MSRA) normal init of every conv weight, zero biases, as the Caffe-era papers did."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, a=negative_slope, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MeanShift(nn.Module):
    """Subtract (``sign=-1``) or add back (``sign=1``) a per-channel mean.

    The mean is configuration, not a learned weight, so it is a non-persistent buffer.
    """

    def __init__(self, mean: Sequence[float], sign: int = -1) -> None:
        super().__init__()
        shift = sign * torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("shift", shift, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift.to(x.dtype)


class PixelShuffleUpsampler(nn.Sequential):
    """Sub-pixel upsampling: one x3 step, or log2(scale) x2 steps (conv to 4C, shuffle).

    Args:
        scale: 2^k or 3.
        num_features: channels in and out.
        act: optional activation factory applied after each shuffle (SRResNet uses PReLU).
    """

    def __init__(self, scale: int, num_features: int, act: Callable[[], nn.Module] | None = None) -> None:
        if scale == 3:
            steps = [3]
        elif scale >= 2 and scale & (scale - 1) == 0:
            steps = [2] * int(math.log2(scale))
        else:
            raise ValueError(f"pixel-shuffle upsampling supports 2^k and 3, not {scale}")
        layers: list[nn.Module] = []
        for r in steps:
            layers += [conv(num_features, num_features * r * r), nn.PixelShuffle(r)]
            if act is not None:
                layers.append(act())
        super().__init__(*layers)
