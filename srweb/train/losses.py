"""Losses: pixel (L1/L2), VGG19 perceptual (SRGAN's VGG54) and the adversarial terms."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from srweb.train.config import ConfigError

# ImageNet statistics used by torchvision's VGG19.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
VGG19_FILE = "vgg19-dcbb9e9d.pth"


def pixel_loss(kind: str) -> nn.Module:
    """``l1`` or ``l2`` (mean squared error)."""
    return nn.L1Loss() if kind == "l1" else nn.MSELoss()


class VGGPerceptualLoss(nn.Module):
    """MSE between VGG19 feature maps (``phi_5,4`` of Ledig et al.: before the 5th max-pool).

    Args:
        weights: ``imagenet`` (torchvision's weights, downloaded once by online users),
            ``random`` (tests: a randomly initialised VGG), or a path to a VGG19 state dict.
        scale: SRGAN rescales the VGG loss by 1 / 12.75**2.
    """

    def __init__(self, weights: str = "imagenet", scale: float = 1 / 12.75**2) -> None:
        super().__init__()
        from torchvision.models import VGG19_Weights, vgg19  # torchvision: only the VGG loss needs it

        if weights == "random":
            net = vgg19(weights=None)
        elif weights == "imagenet":
            try:
                net = vgg19(weights=VGG19_Weights.IMAGENET1K_V1)
            except Exception as exc:  # URLError, socket errors, SSL: all mean "not reachable"
                raise ConfigError(
                    f"VGG19 ImageNet weights are not available ({type(exc).__name__}); offline, put "
                    f"{VGG19_FILE} into $TORCH_HOME/hub/checkpoints/ or pass vgg_weights=PATH, "
                    "or use loss=srgan-mse"
                ) from None
        else:
            net = vgg19(weights=None)
            state = torch.load(Path(weights), map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        self.features = net.features[:36].eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1))
        self.scale = scale

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        sr_f = self.features((sr - self.mean) / self.std)
        with torch.no_grad():
            hr_f = self.features((hr - self.mean) / self.std)
        return F.mse_loss(sr_f, hr_f) * self.scale


def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Binary cross-entropy on discriminator logits against the all-real / all-fake label."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())
