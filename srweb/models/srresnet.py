"""SRResNet and the SRGAN discriminator.

Christian Ledig, Lucas Theis, Ferenc Huszar, Jose Caballero, Andrew Cunningham, Alejandro
Acosta, Andrew Aitken, Alykhan Tejani, Johannes Totz, Zehan Wang, Wenzhe Shi. "Photo-Realistic
Single Image Super-Resolution Using a Generative Adversarial Network", CVPR 2017.

SRResNet (the SRGAN generator): 9x9 conv + PReLU, 16 residual blocks (conv-BN-PReLU-conv-BN),
conv + BN with a long skip, pixel-shuffle x2 stages each followed by PReLU (one x3 stage for
x3), 9x9 tail conv. Parameters: 1,401,749 / 1,586,389 / 1,549,462 at x2 / x3 / x4 (the paper
states no count; ~1.55M is the figure usually cited for x4).

The discriminator is the paper's VGG-style net (8 convs 64->512, strided every second layer,
BN after all but the first, LeakyReLU 0.2, dense 1024, dense 1). Adaptive average pooling to
6x6 (the feature size for 96x96 patches) lets any patch size through. It returns logits:
pair it with ``BCEWithLogitsLoss``, which folds in the paper's final sigmoid stably.
"""

from __future__ import annotations

import torch
from torch import nn

from srweb.models._blocks import PixelShuffleUpsampler, conv
from srweb.models._registry import register_model


class ResidualBlock(nn.Module):
    """conv-BN-PReLU-conv-BN with an identity skip."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(num_features, num_features),
            nn.BatchNorm2d(num_features),
            nn.PReLU(),
            conv(num_features, num_features),
            nn.BatchNorm2d(num_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """SRResNet generator.

    Args:
        scale: 2, 3 or 4.
        in_channels: 3 (RGB) or 1.
        num_features: filters of every conv.
        num_blocks: residual blocks.
    """

    def __init__(self, scale: int, in_channels: int = 3, num_features: int = 64, num_blocks: int = 16) -> None:
        super().__init__()
        self.head = nn.Sequential(conv(in_channels, num_features, 9), nn.PReLU())
        self.body = nn.Sequential(
            *(ResidualBlock(num_features) for _ in range(num_blocks)),
            conv(num_features, num_features),
            nn.BatchNorm2d(num_features),
        )
        self.upsample = PixelShuffleUpsampler(scale, num_features, act=nn.PReLU)
        self.tail = conv(num_features, in_channels, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return self.tail(self.upsample(h + self.body(h)))


class Discriminator(nn.Module):
    """SRGAN discriminator; ``forward`` maps ``(N, C, H, W)`` images to ``(N, 1)`` logits.

    Args:
        in_channels: image channels.
        num_features: filters of the first conv (doubled every two layers up to 8x).
        hidden_features: width of the first dense layer.
        pool_size: spatial size the features are pooled to before the dense layers.
    """

    def __init__(
        self, in_channels: int = 3, num_features: int = 64, hidden_features: int = 1024, pool_size: int = 6
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(8):
            out_channels = num_features * 2 ** (i // 2)
            layers.append(nn.Conv2d(channels, out_channels, 3, stride=1 + i % 2, padding=1))
            if i > 0:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * pool_size * pool_size, hidden_features),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden_features, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


@register_model(
    "srresnet",
    paper_set5={4: 32.05},
    paper="Ledig et al.: Photo-Realistic Single Image Super-Resolution Using a Generative Adversarial "
    "Network (CVPR 2017)",
    year=2017,
    input_kind="rgb",
    upsampling="post",
    defaults={"in_channels": 3, "num_features": 64, "num_blocks": 16},
)
def srresnet(scale: int, **config) -> nn.Module:
    """SRResNet: 16 BN residual blocks and pixel-shuffle upsampling (the SRGAN generator)."""
    return SRResNet(scale, **config)


def create_discriminator(**config) -> nn.Module:
    """SRGAN discriminator with keyword overrides of :class:`Discriminator` (not in the registry)."""
    return Discriminator(**config)
