"""FSRCNN.

Chao Dong, Chen Change Loy, Xiaoou Tang. "Accelerating the Super-Resolution Convolutional
Neural Network", ECCV 2016.

Works on the LR image: feature extraction, shrinking, m mapping layers, expanding (all with
channel-wise PReLU), then a 9x9 deconvolution with stride = scale. FSRCNN(56, 12, 4) has
12,464 conv weights, the paper's count; with biases and PReLU slopes 12,809 parameters at
every scale.
"""

from __future__ import annotations

import torch
from torch import nn

from srweb.models._blocks import conv, init_he
from srweb.models._registry import register_model


class FSRCNN(nn.Module):
    """FSRCNN(d, s, m).

    Args:
        scale: upscaling factor (deconvolution stride).
        in_channels: 1 (Y) or 3.
        num_features: d, LR feature dimension.
        shrink_features: s, channels of the mapping layers.
        num_mapping_layers: m.
    """

    def __init__(
        self,
        scale: int,
        in_channels: int = 1,
        num_features: int = 56,
        shrink_features: int = 12,
        num_mapping_layers: int = 4,
    ) -> None:
        super().__init__()
        d, s = num_features, shrink_features
        self.head = nn.Sequential(conv(in_channels, d, 5), nn.PReLU(d))
        body: list[nn.Module] = [conv(d, s, 1), nn.PReLU(s)]
        for _ in range(num_mapping_layers):
            body += [conv(s, s, 3), nn.PReLU(s)]
        body += [conv(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*body)
        self.upsample = nn.ConvTranspose2d(d, in_channels, 9, stride=scale, padding=4, output_padding=scale - 1)
        # Paper: He init for the PReLU layers, N(0, 0.001) for the deconvolution.
        init_he(self, negative_slope=0.25)
        nn.init.normal_(self.upsample.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.body(self.head(x)))


@register_model(
    "fsrcnn",
    paper_set5={2: 36.94, 3: 33.06, 4: 30.55},
    paper="Dong, Loy, Tang: Accelerating the Super-Resolution Convolutional Neural Network (ECCV 2016)",
    year=2016,
    input_kind="y",
    upsampling="post",
    defaults={"in_channels": 1, "num_features": 56, "shrink_features": 12, "num_mapping_layers": 4},
)
def fsrcnn(scale: int, **config) -> nn.Module:
    """FSRCNN: hourglass CNN on the LR image with a deconvolution upsampler."""
    return FSRCNN(scale, **config)
