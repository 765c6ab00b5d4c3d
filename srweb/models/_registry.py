"""Model registry: every architecture registers a builder under a unique name.

Adding a model is one file that decorates its builder with :func:`register_model`, plus one
import line in ``srweb/models/__init__.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any, Callable

from torch import nn

INPUT_KINDS = ("y", "rgb")
UPSAMPLING_KINDS = ("pre", "post")


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of the system needs to know about an architecture.

    Attributes:
        name: registry name, e.g. ``"edsr-baseline"``.
        builder: ``fn(scale, **config) -> nn.Module``.
        paper: authors, title and venue of the paper.
        year: publication year (0 when there is none).
        input_kind: ``"y"`` or ``"rgb"`` for the default config.
        upsampling: ``"pre"`` (input is the bicubic-upscaled image, output has the same size)
            or ``"post"`` (input is LR, output is ``scale`` times larger).
        scales: supported integer scales.
        defaults: default config, the builder's keyword arguments except ``scale``.
        trainable: ``False`` for parameterless baselines (bicubic, nearest).
        description: one line for listings.
        paper_set5: the paper's Set5 PSNR (Y, dB) per scale, where it reports one.
    """

    name: str
    builder: Callable[..., nn.Module]
    paper: str
    year: int
    input_kind: str
    upsampling: str
    scales: tuple[int, ...]
    defaults: dict[str, Any]
    trainable: bool = True
    description: str = ""
    paper_set5: dict[int, float] = field(default_factory=dict)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    paper: str,
    year: int,
    input_kind: str,
    upsampling: str,
    scales: tuple[int, ...] = (2, 3, 4),
    defaults: dict[str, Any] | None = None,
    trainable: bool = True,
    description: str = "",
    paper_set5: dict[int, float] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``builder(scale, **config) -> nn.Module`` under ``name``.

    Raises:
        ValueError: ``name`` is already registered, or a metadata value is invalid.
    """
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, not {input_kind!r}")
    if upsampling not in UPSAMPLING_KINDS:
        raise ValueError(f"upsampling must be one of {UPSAMPLING_KINDS}, not {upsampling!r}")

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        doc_line = (builder.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[name] = ModelInfo(
            name=name,
            builder=builder,
            paper=paper,
            year=year,
            input_kind=input_kind,
            upsampling=upsampling,
            scales=tuple(scales),
            defaults=dict(defaults or {}),
            trainable=trainable,
            description=description or doc_line,
            paper_set5=dict(paper_set5 or {}),
        )
        return builder

    return decorator


def list_models(include_baselines: bool = True) -> list[str]:
    """Registered model names in registration order (roughly chronological).

    Args:
        include_baselines: include the parameterless ``bicubic`` / ``nearest`` baselines.
    """
    return [n for n, info in _REGISTRY.items() if include_baselines or info.trainable]


def get_model_info(name: str) -> ModelInfo:
    """Metadata of a registered model.

    Raises:
        ValueError: unknown name.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; known: {', '.join(_REGISTRY)}") from None


def create_model(name: str, scale: int, **overrides: Any) -> nn.Module:
    """Build a model and attach the attributes the rest of srweb relies on.

    The returned module carries ``arch``, ``scale``, ``config`` (resolved, JSON-serialisable,
    without ``scale``), ``in_channels``, ``input_kind`` and ``upsampling``.
    ``create_model(m.arch, m.scale, **m.config)`` rebuilds the same architecture.

    Args:
        name: registered model name, see :func:`list_models`.
        scale: upscaling factor, one of ``get_model_info(name).scales``.
        **overrides: config keys to change from ``get_model_info(name).defaults``.

    Raises:
        ValueError: unknown model, unsupported scale or unknown/non-JSON config key.
    """
    info = get_model_info(name)
    if isinstance(scale, bool) or not isinstance(scale, Integral) or int(scale) not in info.scales:
        raise ValueError(f"model {name!r} supports scales {info.scales}, not {scale!r}")
    scale = int(scale)
    unknown = sorted(set(overrides) - set(info.defaults))
    if unknown:
        valid = ", ".join(sorted(info.defaults)) or "none"
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for model {name!r}; valid: {valid}")
    try:
        # The JSON round trip makes tuples lists, so model.config equals what a card stores.
        config = json.loads(json.dumps({**info.defaults, **overrides}))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config of model {name!r} must be JSON-serialisable: {exc}") from None

    model = info.builder(scale, **config)
    in_channels = int(config.get("in_channels", 1 if info.input_kind == "y" else 3))
    model.arch = name
    model.scale = scale
    model.config = config
    model.in_channels = in_channels
    model.input_kind = "y" if in_channels == 1 else "rgb"
    model.upsampling = info.upsampling
    return model
