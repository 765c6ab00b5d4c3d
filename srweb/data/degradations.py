"""Synthetic real-world degradations: how an HR image becomes the LR a model learns (or is scored) on.

A degradation is data, not a code path: a JSON-able config (a named preset plus overrides,
:func:`resolve`) that :func:`degrade` applies to an HR image with a seeded
:class:`numpy.random.Generator`, so the same seed always gives the same LR (training resumes
bit-identical; an eval on degraded inputs is repeatable).

The chain follows Real-ESRGAN (Wang et al. 2021, "second-order degradation"):

* ``clean_prob``: the share of samples that get only the classic MATLAB-bicubic LR;
* ``first`` and ``second`` (each optional, ``second`` taken with its ``prob``): blur (isotropic /
  anisotropic Gaussian, generalized Gaussian, plateau, or a sinc kernel), a random resize
  (``first`` relative to the HR size, ``second`` to the LR size), Gaussian or Poisson noise
  (colour or grey), JPEG over a quality range;
* ``final``: the resize to exactly ``HR / scale`` (MATLAB bicubic, or a random mode) with an
  optional sinc filter, optional noise, and JPEG (before the resize with ``jpeg_first_prob``).

Presets (:data:`PRESETS`): ``bicubic`` (the classic LR, no chain: the papers' setting),
``jpeg`` (what the shipped ``.real`` models learn: half the inputs clean, half JPEG of quality
40-95 after MATLAB bicubic, so clean inputs lose little) and ``realistic`` (Real-ESRGAN's full second-order chain). Evaluation presets
(:data:`EVAL_PRESETS`: ``jpeg75``, ``jpeg50``, ``noise15``, ``realistic``) are fixed chains for
``srweb eval --degradation``. The pieces come from maintained libraries: kernels from scipy's
Bessel function and numpy, filtering and resizing by OpenCV, JPEG by Pillow (libjpeg, as photos
saved by most software), MATLAB bicubic from :mod:`srweb.imaging.resize`.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
from typing import Any

import cv2
import numpy as np
from PIL import Image
from scipy import special

from srweb.imaging.resize import imresize_np

BLUR_KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}
FINAL_RESIZES = ("matlab-bicubic", "random")

BLUR = {
    "prob": 1.0,
    "kernel_size": [7, 21],
    "sigma": [0.2, 3.0],
    "kinds": {
        "iso": 0.45,
        "aniso": 0.25,
        "generalized_iso": 0.12,
        "generalized_aniso": 0.03,
        "plateau_iso": 0.12,
        "plateau_aniso": 0.03,
    },
    "sinc_prob": 0.1,
    "beta_gaussian": [0.5, 4.0],
    "beta_plateau": [1.0, 2.0],
}
RESIZE = {
    "probs": {"up": 0.2, "down": 0.7, "keep": 0.1},
    "range": [0.15, 1.5],
    "modes": ["area", "bilinear", "bicubic"],
}
NOISE = {"prob": 1.0, "gaussian_prob": 0.5, "sigma": [1.0, 30.0], "poisson_scale": [0.05, 3.0], "gray_prob": 0.4}
JPEG = {"prob": 1.0, "quality": [30, 95]}
STAGE = {"prob": 1.0, "blur": None, "resize": None, "noise": None, "jpeg": None}
FINAL = {
    "resize": "matlab-bicubic",
    "sinc_prob": 0.0,
    "sinc_kernel_size": [7, 21],
    "noise": None,
    "jpeg": None,
    "jpeg_first_prob": 0.0,
}
DEFAULT = {"clean_prob": 0.0, "first": None, "second": None, "final": FINAL}
_PARTS = {"blur": BLUR, "resize": RESIZE, "noise": NOISE, "jpeg": JPEG}

PRESETS: dict[str, dict[str, Any]] = {
    "bicubic": {},
    "jpeg": {"clean_prob": 0.5, "final": {"jpeg": {"quality": [40, 95]}}},
    "realistic": {
        "first": {"blur": {}, "resize": {}, "noise": {}, "jpeg": {}},
        "second": {
            "prob": 1.0,
            "blur": {"prob": 0.8, "sigma": [0.2, 1.5]},
            "resize": {"probs": {"up": 0.3, "down": 0.4, "keep": 0.3}, "range": [0.3, 1.2]},
            "noise": {"sigma": [1.0, 25.0], "poisson_scale": [0.05, 2.5]},
            "jpeg": {},
        },
        "final": {"resize": "random", "sinc_prob": 0.8, "jpeg": {}, "jpeg_first_prob": 0.5},
    },
}
"""Training presets (``--degradation``); ``bicubic`` means the classic LR, without a chain."""

EVAL_PRESETS: dict[str, dict[str, Any]] = {
    "jpeg75": {"final": {"jpeg": {"quality": [75, 75]}}},
    "jpeg50": {"final": {"jpeg": {"quality": [50, 50]}}},
    "noise15": {"final": {"noise": {"gaussian_prob": 1.0, "sigma": [15.0, 15.0], "gray_prob": 0.0}}},
    "realistic": PRESETS["realistic"],
}
"""``srweb eval --degradation`` chains: MATLAB bicubic LR, then the named damage (fixed seed)."""
EVAL_SEED = 0
PRESET_LABELS = {
    "bicubic": "clean MATLAB bicubic (paper reproductions)",
    "jpeg": "photos/JPEG: half clean, half JPEG quality 40-95",
    "realistic": "Real-ESRGAN second-order blur/resize/noise/JPEG",
}


class DegradationError(ValueError):
    """An impossible degradation config; the message names the key and the allowed values."""


# ---- configs -----------------------------------------------------------------------------------
def _template(path: tuple[str, ...]) -> dict | None:
    """The keys an object at ``path`` may have (None: a leaf, replaced whole by an override)."""
    if not path:
        return DEFAULT
    if path in (("first",), ("second",)):
        return STAGE
    if path == ("final",):
        return FINAL
    if len(path) == 2 and (path[0] in ("first", "second") or path[1] in ("noise", "jpeg")):
        return _PARTS.get(path[1])
    return None


def _merge(base: Any, override: Any, path: tuple[str, ...] = ()) -> Any:
    """``override`` merged into ``base`` key by key (missing parts from their defaults); unknown keys refused."""
    template = _template(path)
    if template is None or override is None:
        return copy.deepcopy(override)
    where = ".".join(path) or "config"
    if not isinstance(override, dict):
        raise DegradationError(f"degradation: {where} must be an object (or null for none), got {json.dumps(override)}")
    out = copy.deepcopy(base) if isinstance(base, dict) else copy.deepcopy(template)
    for key, value in override.items():
        if key not in template:
            raise DegradationError(f"degradation: unknown key {'.'.join((*path, key))!r}; valid: {', '.join(template)}")
        out[key] = _merge(out.get(key), value, (*path, key))
    return out


def resolve(name: str = "bicubic", overrides: dict | str | None = None, *, presets: dict | None = None) -> dict:
    """The full config of preset ``name`` with ``overrides`` (a dict or JSON text) merged in, checked.

    Every key is spelled out (missing parts come from the defaults), so a card that records it
    replays the same chain even if a preset changes later. ``bicubic`` without overrides is ``{}``.

    Raises:
        DegradationError: unknown preset or key, or an impossible value (see :func:`check`).
    """
    presets = PRESETS if presets is None else presets
    if not isinstance(name, str) or name not in presets:
        raise DegradationError(f"degradation must be one of {', '.join(presets)}, got {name!r}")
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides) if overrides.strip() else {}
        except json.JSONDecodeError as exc:
            raise DegradationError(
                f"degradation config is not valid JSON: {exc.msg} (at character {exc.pos})"
            ) from None
    if overrides is not None and not isinstance(overrides, dict):
        raise DegradationError(
            'degradation config must be a JSON object, e.g. {"final": {"jpeg": {"quality": [50, 95]}}}'
        )
    if not presets[name] and not overrides:
        return {}
    config = _merge(_merge(DEFAULT, presets[name]), overrides or {})
    check(config)
    return config


def _pair(value: Any, where: str, low: float, high: float = math.inf, integer: bool = False) -> tuple:
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )
    if ok and integer:
        ok = all(float(v).is_integer() for v in value)
    if not ok:
        kind = "integers" if integer else "numbers"
        raise DegradationError(f"degradation: {where} must be a [low, high] pair of {kind}, got {json.dumps(value)}")
    lo, hi = value
    if not (low <= lo <= hi <= high):
        span = f"{low:g}-{high:g}" if math.isfinite(high) else f">= {low:g}"
        raise DegradationError(f"degradation: {where} must be within {span} with low <= high, got {json.dumps(value)}")
    return lo, hi


def _prob(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise DegradationError(f"degradation: {where} must be a probability in [0, 1], got {json.dumps(value)}")


def _weights(value: Any, names: tuple[str, ...] | list[str], where: str) -> None:
    if not isinstance(value, dict) or not value:
        raise DegradationError(f"degradation: {where} must be an object of weights over {', '.join(names)}")
    for key, weight in value.items():
        if key not in names:
            raise DegradationError(f"degradation: unknown {where} {key!r}; valid: {', '.join(names)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise DegradationError(f"degradation: {where}.{key} must be a weight >= 0, got {json.dumps(weight)}")
    if sum(value.values()) <= 0:
        raise DegradationError(f"degradation: {where} weights must not all be 0")


def _check_kernel(value: Any, where: str) -> tuple[int, int]:
    lo, hi = _pair(value, where, 3, 101, integer=True)
    if lo % 2 == 0 or hi % 2 == 0:
        raise DegradationError(
            f"degradation: {where} must be odd sizes (a kernel has a centre), got {json.dumps(value)}"
        )
    return int(lo), int(hi)


def _check_stage(stage: dict, where: str) -> int:
    """Check one ``first``/``second`` stage; return its largest kernel side (0 without blur)."""
    _prob(stage["prob"], f"{where}.prob")
    largest = 0
    if stage["blur"] is not None:
        blur, at = stage["blur"], f"{where}.blur"
        _prob(blur["prob"], f"{at}.prob")
        _prob(blur["sinc_prob"], f"{at}.sinc_prob")
        largest = _check_kernel(blur["kernel_size"], f"{at}.kernel_size")[1]
        if _pair(blur["sigma"], f"{at}.sigma", 0)[0] <= 0:
            raise DegradationError(
                f"degradation: {at}.sigma must be > 0 (a blur kernel's width), got {json.dumps(blur['sigma'])}"
            )
        _pair(blur["beta_gaussian"], f"{at}.beta_gaussian", 1e-3)
        _pair(blur["beta_plateau"], f"{at}.beta_plateau", 1e-3)
        _weights(blur["kinds"], BLUR_KINDS, f"{at}.kinds")
    if stage["resize"] is not None:
        resize, at = stage["resize"], f"{where}.resize"
        _weights(resize["probs"], ("up", "down", "keep"), f"{at}.probs")
        _pair(resize["range"], f"{at}.range", 0.05, 4.0)
        if (
            not isinstance(resize["modes"], list)
            or not resize["modes"]
            or any(m not in RESIZE_MODES for m in resize["modes"])
        ):
            raise DegradationError(f"degradation: {at}.modes must be a list of {', '.join(RESIZE_MODES)}")
    if stage["noise"] is not None:
        _check_noise(stage["noise"], f"{where}.noise")
    if stage["jpeg"] is not None:
        _check_jpeg(stage["jpeg"], f"{where}.jpeg")
    return largest


def _check_noise(noise: dict, where: str) -> None:
    for key in ("prob", "gaussian_prob", "gray_prob"):
        _prob(noise[key], f"{where}.{key}")
    _pair(noise["sigma"], f"{where}.sigma", 0, 255)
    _pair(noise["poisson_scale"], f"{where}.poisson_scale", 0, 100)


def _check_jpeg(jpeg: dict, where: str) -> None:
    _prob(jpeg["prob"], f"{where}.prob")
    _pair(jpeg["quality"], f"{where}.quality", 1, 100, integer=True)


def check(config: dict, hr_patch: int | None = None) -> dict:
    """Raise :class:`DegradationError` on the first impossible value of a full config; return it.

    ``hr_patch`` (the HR side of a training patch, ``patch_size * scale``) also refuses blur and
    sinc kernels larger than the patch they would filter.
    """
    if not config:
        return config
    _prob(config["clean_prob"], "clean_prob")
    largest = 0
    for name in ("first", "second"):
        if config[name] is not None:
            largest = max(largest, _check_stage(config[name], name))
    final = config["final"]
    if final["resize"] not in FINAL_RESIZES:
        raise DegradationError(
            f"degradation: final.resize must be one of {', '.join(FINAL_RESIZES)}, got {json.dumps(final['resize'])}"
        )
    _prob(final["sinc_prob"], "final.sinc_prob")
    _prob(final["jpeg_first_prob"], "final.jpeg_first_prob")
    if final["sinc_prob"] > 0:
        largest = max(largest, _check_kernel(final["sinc_kernel_size"], "final.sinc_kernel_size")[1])
    if final["noise"] is not None:
        _check_noise(final["noise"], "final.noise")
    if final["jpeg"] is not None:
        _check_jpeg(final["jpeg"], "final.jpeg")
    if hr_patch is not None and largest > hr_patch:
        raise DegradationError(
            f"degradation: a {largest}x{largest} kernel is larger than the {hr_patch}x{hr_patch} "
            f"HR patch it would blur (patch_size x scale); use a larger patch_size or smaller "
            f"kernel_size"
        )
    return config


def describe(config: dict) -> str:
    """A short name of a full config for protocol strings and labels: ``matlab-bicubic+jpeg75``."""
    if not config:
        return "matlab-bicubic"
    for name in EVAL_PRESETS:
        if config == resolve(name, presets=EVAL_PRESETS):
            return f"matlab-bicubic+{name}" if name != "realistic" else "realistic"
    digest = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return f"custom-{hashlib.sha1(digest.encode()).hexdigest()[:10]}"


# ---- kernels -----------------------------------------------------------------------------------
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    return np.meshgrid(ax, ax)


def _inverse_covariance(sigma_x: float, sigma_y: float, angle: float) -> np.ndarray:
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    cov = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
    return np.linalg.inv(cov)


def gaussian_kernel(
    size: int,
    sigma_x: float,
    sigma_y: float | None = None,
    angle: float = 0.0,
    beta: float = 1.0,
    plateau: bool = False,
) -> np.ndarray:
    """A normalised ``size x size`` kernel: Gaussian (``beta`` = 1), generalized Gaussian
    ``exp(-0.5 d^beta)`` or plateau ``1 / (1 + d^beta)``, ``d`` the squared Mahalanobis distance."""
    x, y = _grid(size)
    inv = _inverse_covariance(sigma_x, sigma_x if sigma_y is None else sigma_y, angle)
    dist = inv[0, 0] * x * x + 2 * inv[0, 1] * x * y + inv[1, 1] * y * y
    kernel = 1.0 / (1.0 + dist**beta) if plateau else np.exp(-0.5 * dist**beta)
    return kernel / kernel.sum()


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """A normalised 2-D circular low-pass (sinc) kernel with ``cutoff`` in radians per pixel (ringing)."""
    x, y = _grid(size)
    radius = np.hypot(x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = cutoff * special.j1(cutoff * radius) / (2 * np.pi * radius)
    kernel[radius == 0] = cutoff**2 / (4 * np.pi)
    return kernel / kernel.sum()


def random_kernel(blur: dict, rng: np.random.Generator) -> np.ndarray:
    """A kernel drawn from a ``blur`` config (sizes, sigmas, kinds, betas, sinc share)."""
    lo, hi = blur["kernel_size"]
    size = int(rng.choice(np.arange(lo, hi + 1, 2)))
    if rng.random() < blur["sinc_prob"]:
        cutoff = rng.uniform(math.pi / 3, math.pi) if size < 13 else rng.uniform(math.pi / 5, math.pi)
        return sinc_kernel(size, cutoff)
    kinds = list(blur["kinds"])
    weights = np.array([blur["kinds"][k] for k in kinds], dtype=np.float64)
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    sigma_x = rng.uniform(*blur["sigma"])
    sigma_y, angle = (
        (rng.uniform(*blur["sigma"]), rng.uniform(-math.pi, math.pi)) if kind.endswith("aniso") else (sigma_x, 0.0)
    )
    beta, plateau = 1.0, kind.startswith("plateau")
    if kind.startswith("generalized"):
        beta = rng.uniform(*blur["beta_gaussian"])
    elif plateau:
        beta = rng.uniform(*blur["beta_plateau"])
    return gaussian_kernel(size, sigma_x, sigma_y, angle, beta=beta, plateau=plateau)


# ---- the pieces --------------------------------------------------------------------------------
def filter2d(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``img`` (float32 HxWxC) convolved with ``kernel``, mirrored at the borders (any image size)."""
    pad = kernel.shape[0] // 2
    if min(img.shape[:2]) > 1:
        padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    else:
        padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    out = cv2.filter2D(padded, -1, kernel.astype(np.float32), borderType=cv2.BORDER_CONSTANT)
    out = out.reshape(padded.shape)  # cv2 drops a single channel's axis
    return out[pad : pad + img.shape[0], pad : pad + img.shape[1]]


def resize(img: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """``img`` (float32 HxWxC) resized to ``size`` = (height, width) by OpenCV's ``mode``."""
    out = cv2.resize(img, (size[1], size[0]), interpolation=RESIZE_MODES[mode])
    return out.reshape(size[0], size[1], img.shape[2])


def add_noise(img: np.ndarray, noise: dict, rng: np.random.Generator) -> np.ndarray:
    """Gaussian (``sigma`` on the 0-255 scale) or Poisson noise, colour or grey (one field on all channels)."""
    gray = rng.random() < noise["gray_prob"]
    shape = (*img.shape[:2], 1) if gray else img.shape
    if rng.random() < noise["gaussian_prob"]:
        sigma = rng.uniform(*noise["sigma"]) / 255.0
        field = rng.standard_normal(shape).astype(np.float32) * sigma
    else:
        scale = rng.uniform(*noise["poisson_scale"])
        base = img.mean(axis=2, keepdims=True) if gray else img
        base = np.clip(np.round(base * 255.0), 0, 255) / 255.0
        levels = 2.0 ** math.ceil(math.log2(max(2, len(np.unique(base)))))
        field = ((rng.poisson(base * levels) / levels - base) * scale).astype(np.float32)
    return img + field


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode uint8 RGB as a Pillow (libjpeg) JPEG at ``quality`` (4:2:0, as photos are saved)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB"))


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def _to_float(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else np.clip(img, 0.0, 1.0).astype(np.float32)


# ---- the chain ---------------------------------------------------------------------------------
def _random_resize(img: np.ndarray, resize_cfg: dict, base: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    probs = resize_cfg["probs"]
    names = [k for k in ("up", "down", "keep") if k in probs]
    weights = np.array([probs[k] for k in names], dtype=np.float64)
    way = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    lo, hi = resize_cfg["range"]
    factor = {
        "up": lambda: rng.uniform(1.0, max(1.0, hi)),
        "down": lambda: rng.uniform(lo, min(1.0, hi)),
        "keep": lambda: 1.0,
    }[way]()
    mode = resize_cfg["modes"][int(rng.integers(len(resize_cfg["modes"])))]
    size = (max(1, int(base[0] * factor)), max(1, int(base[1] * factor)))
    return resize(img, size, mode)


def _jpeg_step(img: np.ndarray, jpeg_cfg: dict, rng: np.random.Generator) -> np.ndarray:
    if rng.random() >= jpeg_cfg["prob"]:
        return img
    quality = int(rng.integers(jpeg_cfg["quality"][0], jpeg_cfg["quality"][1] + 1))
    return jpeg(_to_uint8(img), quality)


def _stage(img: np.ndarray, stage: dict, base: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One order of blur, resize (relative to ``base``), noise and JPEG, each with its probability."""
    if stage["blur"] is not None and rng.random() < stage["blur"]["prob"]:
        img = filter2d(_to_float(img), random_kernel(stage["blur"], rng))
    if stage["resize"] is not None:
        img = _random_resize(_to_float(img), stage["resize"], base, rng)
    if stage["noise"] is not None and rng.random() < stage["noise"]["prob"]:
        img = add_noise(_to_float(img), stage["noise"], rng)
    if stage["jpeg"] is not None:
        img = _jpeg_step(img, stage["jpeg"], rng)
    return img


def _final_resize(img: np.ndarray, final: dict, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    if final["resize"] == "matlab-bicubic":
        # uint8 in, uint8 out: exactly the classic LR (srweb.data.folders.make_lr) when nothing came before
        out = imresize_np(img if img.dtype == np.uint8 else img.astype(np.float64), size=size)
        img = out if out.dtype == np.uint8 else out.astype(np.float32)
    else:
        img = resize(_to_float(img), size, list(RESIZE_MODES)[int(rng.integers(len(RESIZE_MODES)))])
    if rng.random() < final["sinc_prob"]:
        lo, hi = final["sinc_kernel_size"]
        img = filter2d(
            _to_float(img), sinc_kernel(int(rng.choice(np.arange(lo, hi + 1, 2))), rng.uniform(math.pi / 3, math.pi))
        )
    return img


def degrade(hr: np.ndarray, scale: int, config: dict, rng: np.random.Generator) -> np.ndarray:
    """The LR (uint8 RGB, ``HR / scale`` in size) that ``config`` makes from a mod-cropped uint8 RGB HR.

    With the empty config (``bicubic``) or a ``clean_prob`` draw it is MATLAB bicubic, exactly
    :func:`srweb.data.folders.make_lr`. Every random choice comes from ``rng``, in a fixed order.
    """
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"HR {w}x{h} is not a multiple of x{scale} (mod-crop it first)")
    size = (h // scale, w // scale)
    if not config or rng.random() < config["clean_prob"]:
        return imresize_np(hr, size=size)
    img: np.ndarray = hr
    if config["first"] is not None:
        img = _stage(img, config["first"], (h, w), rng)
    second = config["second"]
    if second is not None and rng.random() < second["prob"]:
        img = _stage(img, second, size, rng)
    final = config["final"]
    jpeg_first = final["jpeg"] is not None and rng.random() < final["jpeg_first_prob"]
    if jpeg_first:
        img = _jpeg_step(img, final["jpeg"], rng)
    img = _final_resize(img, final, size, rng)
    if final["noise"] is not None and rng.random() < final["noise"]["prob"]:
        img = add_noise(_to_float(img), final["noise"], rng)
    if final["jpeg"] is not None and not jpeg_first:
        img = _jpeg_step(img, final["jpeg"], rng)
    return _to_uint8(_to_float(img) if img.dtype != np.uint8 else img)


def eval_config(name: str) -> dict:
    """The full chain of an evaluation preset (``jpeg75``, ``jpeg50``, ``noise15``, ``realistic``);
    ``bicubic`` (or ``""``) is the classic LR, ``{}``."""
    if name in ("", "bicubic", "matlab-bicubic"):
        return {}
    if not isinstance(name, str) or name not in EVAL_PRESETS:
        raise DegradationError(f"degradation must be one of bicubic, {', '.join(EVAL_PRESETS)}, got {name!r}")
    return resolve(name, presets=EVAL_PRESETS)


def eval_rng(index: int) -> np.random.Generator:
    """The fixed generator for the ``index``-th image of a degraded evaluation (the same LR every time)."""
    return np.random.default_rng([EVAL_SEED, index])
