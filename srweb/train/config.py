"""TrainConfig: every hyperparameter of a run, validated, with a JSON round trip."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srweb.data.degradations import DegradationError, eval_config
from srweb.data.degradations import check as check_degradation
from srweb.data.degradations import resolve as resolve_degradation
from srweb.models import get_model_info

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "step", "cosine")
LOSSES = ("l1", "l2", "srgan-mse", "srgan-vgg54")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CLIP_MODES = ("norm", "adjustable")
VAL_DEGRADATIONS = {"jpeg": "jpeg75", "realistic": "realistic"}  # a degraded run is judged on what it learns
_INTS = (
    "scale",
    "patch_size",
    "batch_size",
    "iterations",
    "lr_step",
    "val_interval",
    "ckpt_interval",
    "seed",
    "num_workers",
)
_NUMBERS = (
    "lr",
    "momentum",
    "weight_decay",
    "lr_gamma",
    "min_lr",
    "grad_clip",
    "adv_weight",
    "recursive_alpha",
    "ema",
    "teacher_weight",
)
_BOOLS = ("augment", "scale_augment", "teacher_unlabelled", "freeze_bn", "channels_last")
# tag ends up in a file name (ARCH-xS.TAG.safetensors), name in a folder name: no path separators.
_TAG = re.compile(r"[A-Za-z0-9_.-]+")
_NAME = re.compile(r"[\w.+-]{1,200}")

BASE_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",
    "lr": 1e-4,
    "loss": "l1",
    "patch_size": 32,
    "clip_mode": "norm",
    "weight_decay": 0.0,
}
# Per-architecture defaults taken from the papers (LR patch size, loss, optimiser, lr).
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "srcnn": {"patch_size": 11, "loss": "l2", "lr": 1e-3},
    "fsrcnn": {"patch_size": 10, "loss": "l2", "lr": 1e-3},
    "espcn": {"patch_size": 17, "loss": "l2", "lr": 1e-3},
    "vdsr": {
        "patch_size": 14,
        "loss": "l2",
        "optimizer": "sgd",
        "lr": 0.1,
        "grad_clip": 0.4,
        "clip_mode": "adjustable",
        "weight_decay": 1e-4,
    },
    "drcn": {"patch_size": 14, "loss": "l2", "lr": 1e-4},
    "red30": {"patch_size": 16, "loss": "l2", "lr": 1e-4},
    "drrn": {"patch_size": 10, "loss": "l2", "lr": 1e-4, "grad_clip": 0.01, "clip_mode": "adjustable"},
    "edsr-baseline": {"patch_size": 48, "loss": "l1", "lr": 1e-4},
    "edsr": {"patch_size": 48, "loss": "l1", "lr": 1e-4},
    "srresnet": {"patch_size": 24, "loss": "l2", "lr": 1e-4},
}


class ConfigError(ValueError):
    """A hyperparameter that cannot work; the message says which and why."""


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (JSON-serialisable).

    ``patch_size`` is the LR patch side; the HR patch is ``patch_size * scale``. ``data`` and
    ``val_data`` are folders (HR images, a prepared/DIV2K tree) or names (``sample``,
    ``General-100``, ``Set5``) resolved against the data root; ``data=None`` resolves to
    :func:`~srweb.data.samples.default_training_data` (General-100 when the data root has it).
    ``teacher`` names trained weights to distil from (:mod:`srweb.train.teacher`); the pixel loss is
    then ``(1 - teacher_weight) * loss(SR, HR) + teacher_weight * loss(SR, teacher's SR)``. With
    ``teacher_unlabelled`` the training images (and their ``scale_augment`` copies) are also LR inputs
    as they are, with the teacher's output as the only target (their HR, also in the logged
    ``hr_loss``): as many patches again, from images ``scale`` times the size of their LR.
    """

    model: str
    scale: int = 2
    overrides: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    val_data: str | None = "Set5"
    patch_size: int | None = None
    batch_size: int = 16
    iterations: int = 1000
    optimizer: str | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: str = "constant"
    lr_step: int | None = None
    lr_gamma: float = 0.5
    min_lr: float = 0.0
    grad_clip: float | None = None
    clip_mode: str | None = None
    loss: str | None = None
    adv_weight: float = 1e-3
    ema: float = 0.0
    teacher: str | None = None
    teacher_weight: float = 0.5
    teacher_unlabelled: bool = False
    freeze_bn: bool = False
    pretrained: str | None = None
    vgg_weights: str = "imagenet"
    recursive_alpha: float = 1.0
    augment: bool = True
    scale_augment: bool = False
    val_interval: int = 500
    ckpt_interval: int = 500
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    num_workers: int = 0
    tag: str = "custom"
    name: str | None = None
    degradation: str = "bicubic"
    degradation_config: dict[str, Any] = field(default_factory=dict)
    val_degradation: str = "auto"

    def resolved(self) -> "TrainConfig":
        """A copy with architecture defaults filled in for every ``None`` field."""
        defaults = {**BASE_DEFAULTS, **ARCH_DEFAULTS.get(self.model, {})}
        values = dataclasses.asdict(self)
        for key, value in defaults.items():
            if values.get(key) is None:
                values[key] = value
        if values["data"] is None:
            from srweb.data.samples import default_training_data

            values["data"] = default_training_data()
        if isinstance(values["degradation"], str) and isinstance(values["degradation_config"], (dict, str)):
            # Spelled out in full, so the card replays this chain even if the preset changes later.
            try:
                values["degradation_config"] = resolve_degradation(values["degradation"], values["degradation_config"])
            except DegradationError:
                pass  # validate() reports it
        if values["name"] is None:
            values["name"] = run_name(TrainConfig(**values))
        return TrainConfig(**values)

    def validate(self) -> "TrainConfig":
        """Raise :class:`ConfigError` on the first impossible hyperparameter; return self."""
        try:
            info = get_model_info(self.model)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not info.trainable:
            raise ConfigError(f"{self.model} is a baseline without parameters; nothing to train")
        for key in _INTS:
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{key} must be an integer, got {value!r}")
        for key in _NUMBERS:
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ConfigError(f"{key} must be a number, got {value!r}")
        for key in _BOOLS:
            value = getattr(self, key)
            if not isinstance(value, bool):
                raise ConfigError(f"{key} must be true or false, got {value!r}")
        unknown = sorted(set(self.overrides) - set(info.defaults))
        if unknown:
            raise ConfigError(
                f"unknown override(s) {', '.join(unknown)} for {self.model}; valid: {', '.join(sorted(info.defaults))}"
            )
        if self.scale not in info.scales:
            raise ConfigError(f"{self.model} supports scales {info.scales}, not {self.scale}")
        checks = [
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.iterations >= 1, f"iterations must be >= 1, got {self.iterations}"),
            (self.patch_size is None or self.patch_size >= 4, f"patch_size must be >= 4, got {self.patch_size}"),
            (self.lr is None or (math.isfinite(self.lr) and self.lr > 0), f"lr must be > 0, got {self.lr}"),
            (self.optimizer in (None, *OPTIMIZERS), f"optimizer must be one of {OPTIMIZERS}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
            (self.loss in (None, *LOSSES), f"loss must be one of {LOSSES}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
            (self.clip_mode in (None, *CLIP_MODES), f"clip_mode must be one of {CLIP_MODES}"),
            (self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
            (self.val_interval >= 1 and self.ckpt_interval >= 1, "val_interval and ckpt_interval must be >= 1"),
            (0 < self.lr_gamma <= 1, f"lr_gamma must be in (0, 1], got {self.lr_gamma}"),
            (0 <= self.ema < 1, f"ema must be in [0, 1) (a decay such as 0.999; 0 = off), got {self.ema}"),
            (
                0 < self.teacher_weight <= 1,
                f"teacher_weight must be in (0, 1] (the teacher's share of the pixel loss), got {self.teacher_weight}",
            ),
            (
                bool(self.teacher) or not self.teacher_unlabelled,
                "teacher_unlabelled needs a teacher to label the images",
            ),
            ((self.weight_decay or 0) >= 0 and self.momentum >= 0, "weight_decay and momentum must be >= 0"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (bool(_TAG.fullmatch(str(self.tag))), f"tag may use letters, digits and _ . - only, got {self.tag!r}"),
            (
                self.name is None or bool(_NAME.fullmatch(str(self.name))),
                f"name may use letters, digits and _ . + - only (at most 200), got {self.name!r}",
            ),
            (
                self.loss not in ("srgan-mse", "srgan-vgg54") or self.model == "srresnet",
                "SRGAN losses train the srresnet generator; use --model srresnet",
            ),
            (
                self.vgg_weights in ("imagenet", "random") or Path(self.vgg_weights).exists(),
                "vgg_weights must be imagenet, random or a path to VGG19 weights",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self._validate_degradation()
        return self

    def _validate_degradation(self) -> None:
        try:
            chain = resolve_degradation(self.degradation, self.degradation_config)
            check_degradation(chain, hr_patch=self.patch_size * self.scale if self.patch_size else None)
            if self.val_degradation != "auto":
                eval_config(self.val_degradation)
        except DegradationError as exc:
            raise ConfigError(str(exc)) from None
        if chain and self.teacher:
            raise ConfigError("a teacher labels the classic LR; train with --degradation bicubic or without --teacher")

    @property
    def eval_degradation(self) -> str:
        """The ``srweb eval --degradation`` this run is validated under (``val_degradation``; ``auto``:
        ``jpeg75`` for the ``jpeg`` preset, ``realistic`` for ``realistic``, the classic LR otherwise)."""
        if self.val_degradation != "auto":
            return self.val_degradation
        return VAL_DEGRADATIONS.get(self.degradation, "") if self.degradation_config else ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown hyperparameters: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))


def _short(value: float) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)  # validate() rejects it with a clear message; naming must not fail first
    return f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e")


def _spell(value: Any) -> str:
    return "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def run_name(cfg: TrainConfig) -> str:
    """A name that spells out the config, e.g. ``edsr-baseline-x2_f64b16_p48_b16_lr1e-4``."""
    try:  # width/depth come from the model's defaults unless overridden
        o = {**get_model_info(cfg.model).defaults, **cfg.overrides}
    except ValueError:
        o = dict(cfg.overrides)
    parts = [f"{cfg.model}-x{cfg.scale}"]
    arch = "".join(f"{letter}{_spell(o[k])}" for k, letter in (("num_features", "f"), ("num_blocks", "b")) if k in o)
    if arch:
        parts.append(arch)
    parts += [f"p{cfg.patch_size}", f"b{cfg.batch_size}", f"lr{_short(cfg.lr or 0)}"]
    if cfg.loss and cfg.loss not in ("l1",):
        parts.append(cfg.loss)
    if isinstance(cfg.ema, (int, float)) and cfg.ema:
        parts.append(f"ema{cfg.ema:g}")
    if cfg.teacher:
        parts.append(f"kd{cfg.teacher_weight:g}" + "u" * bool(cfg.teacher_unlabelled))
    if cfg.freeze_bn:
        parts.append("frozenbn")
    if cfg.degradation != "bicubic" or cfg.degradation_config:
        parts.append(f"deg-{cfg.degradation}")
    return "_".join(parts)
