"""DRCN.

Jiwon Kim, Jung Kwon Lee, Kyoung Mu Lee. "Deeply-Recursive Convolutional Network for Image
Super-Resolution", CVPR 2016.

Embedding net (two 3x3x256 convs), inference net (ONE 3x3x256 conv applied D = 16 times),
reconstruction net (two convs) shared by all recursions. Each recursion's reconstruction gets
the input added (skip connection); the output is the weighted sum of the D predictions with
learned weights initialised to 1/D (no softmax, as in the paper). Parameters: 1,775,121
(paper 1,774,080 counting conv weights only; ~1.77M).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from srweb.models._blocks import conv, init_he
from srweb.models._registry import register_model


class DRCN(nn.Module):
    """Deeply-recursive CNN with recursive supervision.

    Args:
        in_channels: 1 (Y) or 3.
        num_features: filters of every conv (256 in the paper).
        num_recursions: D, applications of the shared inference conv (16 in the paper).
    """

    def __init__(self, in_channels: int = 1, num_features: int = 256, num_recursions: int = 16) -> None:
        super().__init__()
        self.num_recursions = num_recursions
        self.head = nn.Sequential(
            conv(in_channels, num_features),
            nn.ReLU(inplace=True),
            conv(num_features, num_features),
            nn.ReLU(inplace=True),
        )
        self.body = conv(num_features, num_features)
        self.tail = nn.Sequential(
            conv(num_features, num_features), nn.ReLU(inplace=True), conv(num_features, in_channels)
        )
        self.ensemble_weights = nn.Parameter(torch.full((num_recursions,), 1.0 / num_recursions))
        init_he(self)

    def forward_with_supervision(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Ensemble output and the D intermediate predictions (for recursive supervision).

        Returns:
            ``(output, [y_1, ..., y_D])``, each the size of ``x``.
        """
        h = self.head(x)
        predictions = []
        for _ in range(self.num_recursions):
            h = F.relu(self.body(h))
            predictions.append(self.tail(h) + x)
        weights = self.ensemble_weights.view(-1, 1, 1, 1, 1)
        output = (weights * torch.stack(predictions)).sum(0)
        return output.to(predictions[0].dtype), predictions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_supervision(x)[0]


@register_model(
    "drcn",
    paper_set5={2: 37.63, 3: 33.82, 4: 31.53},
    paper="Kim, Lee, Lee: Deeply-Recursive Convolutional Network for Image Super-Resolution (CVPR 2016)",
    year=2016,
    input_kind="y",
    upsampling="pre",
    defaults={"in_channels": 1, "num_features": 256, "num_recursions": 16},
)
def drcn(scale: int, **config) -> nn.Module:
    """DRCN: 16 recursions of one shared conv, ensemble of the recursion outputs."""
    return DRCN(**config)
