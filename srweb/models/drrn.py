"""DRRN.

Ying Tai, Jian Yang, Xiaoming Liu. "Image Super-Resolution via Deep Recursive Residual
Network", CVPR 2017.

B recursive blocks; each starts with its own conv and then runs U residual units that share
the block's two 3x3 convs, every unit adding the block's first feature map (multi-path local
residual learning). Units are pre-activation (BN-ReLU-conv); as in the authors' Caffe model,
each unit has its own BN layers, and the input and the final conv get BN-ReLU too. Global
residual: the output is added to the bicubic input. Depth is (1 + 2U)B + 1.

DRRN_B1U25 (52 layers, 128 features): 297,216 conv weights, the paper's 297K; with biases
and BN affine parameters 310,659 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from srweb.models._blocks import conv, init_he
from srweb.models._registry import register_model


def _pre_act(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class RecursiveBlock(nn.Module):
    """Entry conv followed by ``num_units`` residual units sharing two convs."""

    def __init__(self, in_channels: int, num_features: int, num_units: int) -> None:
        super().__init__()
        self.head = nn.Sequential(_pre_act(in_channels), conv(in_channels, num_features))
        self.conv_a = conv(num_features, num_features)
        self.conv_b = conv(num_features, num_features)
        self.norms = nn.ModuleList(
            nn.ModuleList([_pre_act(num_features), _pre_act(num_features)]) for _ in range(num_units)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = h = self.head(x)
        for act_a, act_b in self.norms:
            h = identity + self.conv_b(act_b(self.conv_a(act_a(h))))
        return h


class DRRN(nn.Module):
    """Deep recursive residual network DRRN_B{num_blocks}U{num_units}.

    Args:
        in_channels: 1 (Y) or 3.
        num_features: filters of every conv (128 in the paper).
        num_blocks: B, recursive blocks (each with its own weights).
        num_units: U, residual units per block (sharing that block's weights).
    """

    def __init__(self, in_channels: int = 1, num_features: int = 128, num_blocks: int = 1, num_units: int = 25) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *(
                RecursiveBlock(in_channels if b == 0 else num_features, num_features, num_units)
                for b in range(num_blocks)
            )
        )
        self.tail = nn.Sequential(_pre_act(num_features), conv(num_features, in_channels))
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.tail(self.body(x))


@register_model(
    "drrn",
    paper_set5={2: 37.74, 3: 34.03, 4: 31.68},
    paper="Tai, Yang, Liu: Image Super-Resolution via Deep Recursive Residual Network (CVPR 2017)",
    year=2017,
    input_kind="y",
    upsampling="pre",
    defaults={"in_channels": 1, "num_features": 128, "num_blocks": 1, "num_units": 25},
)
def drrn(scale: int, **config) -> nn.Module:
    """DRRN: recursive blocks of weight-shared pre-activation residual units."""
    return DRRN(**config)
