"""PSNR and SSIM as SR papers report them: explicit border shave and Y-channel switch.

SSIM follows Wang et al. (2004) / MATLAB ``ssim_index``: 11x11 Gaussian window (sigma 1.5),
K1 = 0.01, K2 = 0.03, L = 255, statistics with 1/N (not 1/(N-1)), mean over the 'valid' part
of the SSIM map. ``skimage.metrics.structural_similarity`` with the settings below computes
exactly that (it filters with a normalised truncate-3.5 Gaussian, radius 5, then drops the
5-pixel rim); ``tests/test_metrics.py`` checks it against a direct 'valid'-convolution
implementation of the MATLAB formula: they agree to ~1e-15 (0.72064873570366 both).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity

from srweb.imaging.io import rgb_to_y_np

ImageLike = Image.Image | np.ndarray


@dataclass(frozen=True)
class Protocol:
    """How a stored metric was measured; saved beside every result."""

    crop_border: int
    dataset: str = ""
    channel: str = "y"
    degradation: str = "matlab-bicubic"

    def to_dict(self) -> dict:
        """Plain dict for JSON and the database."""
        return asdict(self)


def protocol(scale: int, dataset: str = "", degradation: str = "matlab-bicubic") -> dict:
    """The classic SR protocol at ``scale``: Y channel, ``scale`` pixels shaved, MATLAB bicubic LR
    (or LR made by a named degradation, :func:`srweb.data.degradations.describe`)."""
    return Protocol(crop_border=scale, dataset=dataset, degradation=degradation).to_dict()


def _prepare(a: ImageLike, b: ImageLike, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if a.ndim not in (2, 3):
        raise ValueError(f"expected HxW or HxWxC images, got shape {a.shape}")
    if y_channel and a.ndim == 3 and a.shape[2] == 3:
        a, b = rgb_to_y_np(a), rgb_to_y_np(b)
    elif a.ndim == 3 and a.shape[2] == 1:
        a, b = a[..., 0], b[..., 0]
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        if min(a.shape[:2]) <= 2 * crop_border:
            raise ValueError(f"image {a.shape[:2]} too small for crop_border={crop_border}")
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    return a, b


def psnr(a: ImageLike, b: ImageLike, *, crop_border: int, y_channel: bool) -> float:
    """Peak signal-to-noise ratio in dB for images with values in [0, 255].

    Args:
        a, b: PIL images or arrays ``HxW`` / ``HxWxC`` (uint8 or float in [0, 255]).
        crop_border: pixels removed from every side before comparing (the scale, usually).
        y_channel: compare the MATLAB Y channel of RGB inputs instead of all channels.

    Returns:
        PSNR in dB; ``math.inf`` for identical images.

    Raises:
        ValueError: shapes differ (both named) or the crop leaves nothing.
    """
    a, b = _prepare(a, b, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(a: ImageLike, b: ImageLike, *, crop_border: int, y_channel: bool) -> float:
    """Structural similarity (Wang et al. 2004), channel-wise mean for colour inputs.

    Arguments and errors as :func:`psnr`; returns a value in [-1, 1], 1.0 for identical images.
    """
    a, b = _prepare(a, b, crop_border, y_channel)
    return float(
        structural_similarity(
            a,
            b,
            data_range=255.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            K1=0.01,
            K2=0.03,
            channel_axis=2 if a.ndim == 3 else None,
        )
    )
