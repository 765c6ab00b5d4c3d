"""RED30 (RED-Net, 30 layers).

Xiao-Jiao Mao, Chunhua Shen, Yu-Bin Yang. "Image Restoration Using Very Deep Convolutional
Encoder-Decoder Networks with Symmetric Skip Connections", NIPS 2016.

15 convolutions then 15 deconvolutions (3x3, 64 features, stride 1: no pooling for SR). Every
second conv's feature map is added to its mirrored deconv's output before the ReLU, and the
input image is added to the final output. Parameters: 1,035,201 (~1.03M) with 64 features.
The DRRN paper tabulates RED30 at 4,131K, i.e. 128 features: ``num_features=128`` gives that
variant (4,134,785 parameters, 4,131,072 conv weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from srweb.models._blocks import conv
from srweb.models._registry import register_model


class RED30(nn.Module):
    """Residual encoder-decoder with symmetric skips.

    Args:
        in_channels: 1 (Y) or 3.
        num_features: filters of every layer.
        num_layers: convolutions, and as many deconvolutions (15 for RED30).
        skip_every: a skip leaves every ``skip_every``-th conv layer (2 in the paper).
    """

    def __init__(self, in_channels: int = 1, num_features: int = 64, num_layers: int = 15, skip_every: int = 2) -> None:
        super().__init__()
        self.num_layers, self.skip_every = num_layers, skip_every
        self.head = conv(in_channels, num_features)
        self.encoder = nn.ModuleList(conv(num_features, num_features) for _ in range(num_layers - 1))
        self.decoder = nn.ModuleList(
            nn.ConvTranspose2d(num_features, num_features, 3, padding=1) for _ in range(num_layers - 1)
        )
        self.tail = nn.ConvTranspose2d(num_features, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Conv layer k (1-based) mirrors the output of deconv layer num_layers - k.
        skips: dict[int, torch.Tensor] = {}
        h = x
        for k, layer in enumerate([self.head, *self.encoder], start=1):
            h = F.relu(layer(h))
            if k % self.skip_every == 0 and k < self.num_layers:
                skips[k] = h
        for j, layer in enumerate(self.decoder, start=1):
            h = layer(h)
            skip = skips.get(self.num_layers - j)
            h = F.relu(h + skip if skip is not None else h)
        return x + self.tail(h)


@register_model(
    "red30",
    paper="Mao, Shen, Yang: Image Restoration Using Very Deep Convolutional Encoder-Decoder Networks "
    "with Symmetric Skip Connections (NIPS 2016)",
    year=2016,
    input_kind="y",
    upsampling="pre",
    defaults={"in_channels": 1, "num_features": 64, "num_layers": 15, "skip_every": 2},
)
def red30(scale: int, **config) -> nn.Module:
    """RED30: 15 convs + 15 deconvs with symmetric skip connections."""
    return RED30(**config)
