"""Distillation: a stronger trained model's output as a second target of the pixel loss.

A small network trained on a small set (ESPCN on General-100) learns more from HR images
plus a strong teacher's reconstruction of the same LR patch than from HR alone: the teacher's
output is the part of HR that is predictable from LR, a lower-variance target. The teacher
runs once per training image (and rescale factor) when the patches are prepared, so it costs
no time per step; it may be of another scale (its output is resized with MATLAB bicubic, e.g.
edsr-baseline x4 teaching a x3 model) and "NAME+" uses its self-ensemble.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from srweb.train.config import ConfigError, TrainConfig
from srweb.inference.upscaler import Upscaler
from srweb.models import list_models
from srweb.weights.files import WeightsError, resolve_weights


@dataclass
class Teacher:
    upscale: Callable[[np.ndarray], np.ndarray]  # LR uint8 RGB -> SR uint8 RGB at the student's scale
    record: dict[str, Any]  # for the card: name, sha256, scale, metrics
    cache_id: str  # names its outputs in the patch cache: weights and self-ensemble


def check_teacher(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` (or ``NAME+``) finds trained weights; loads nothing."""
    if name.rstrip("+") in list_models():
        raise ConfigError(
            f"teacher {name!r} is an architecture, not trained weights; give weights "
            "(e.g. edsr-baseline-x4.general100, see `srweb models`)"
        )
    try:
        resolve_weights(name if Path(name).exists() else name.removesuffix("+"))
    except (WeightsError, ValueError, OSError) as exc:
        raise ConfigError(f"teacher {name!r}: {exc}") from None


def load_teacher(cfg: TrainConfig, device: str) -> Teacher:
    """The teacher ``cfg.teacher`` names, on ``device`` in fp32."""
    check_teacher(cfg.teacher)
    try:
        upscaler = Upscaler(cfg.teacher, device=device, precision="fp32", output_scale=cfg.scale)
    except (WeightsError, ValueError, OSError) as exc:
        raise ConfigError(f"teacher {cfg.teacher!r}: {exc}") from None
    card = upscaler.card
    record = {"name": upscaler.name, "sha256": card.sha256, "scale": card.scale, "metrics": card.metrics}
    return Teacher(upscaler.upscale, record, card.sha256[:16] + "+" * upscaler.self_ensemble)
