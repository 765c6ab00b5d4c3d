"""PSNR/SSIM: identical images, shape mismatch, a known value, and SSIM against the MATLAB formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from scipy.signal import correlate2d

from srweb.imaging.io import rgb_to_y_np
from srweb.evaluation.metrics import protocol, psnr, ssim


def test_identical_images() -> None:
    img = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    assert psnr(img, img.copy(), crop_border=2, y_channel=True) == math.inf
    assert ssim(img, img, crop_border=0, y_channel=False) == pytest.approx(1.0)


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(20, 24\).*\(20, 25\)"):
        psnr(np.zeros((20, 24)), np.zeros((20, 25)), crop_border=0, y_channel=False)
    with pytest.raises(ValueError, match="differ"):
        ssim(np.zeros((20, 24, 3)), np.zeros((20, 24)), crop_border=0, y_channel=True)


def test_known_psnr_value() -> None:
    # Uniform error of 5 grey levels: MSE 25 -> 10*log10(255^2/25) = 34.1514 dB.
    a = np.full((16, 16), 100, np.uint8)
    b = a + 5
    assert psnr(a, b, crop_border=0, y_channel=False) == pytest.approx(34.15140352195873)
    # Border shave: the error only in the rim is ignored.
    c = a.copy()
    c[0, :] = 0
    assert psnr(a, c, crop_border=1, y_channel=False) == math.inf


def test_y_channel_and_pil_inputs() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-3, 4, a.shape), 0, 255).astype(np.uint8)
    ya, yb = rgb_to_y_np(a)[2:-2, 2:-2], rgb_to_y_np(b)[2:-2, 2:-2]
    expected = 10 * math.log10(255**2 / np.mean((ya - yb) ** 2))
    got = psnr(Image.fromarray(a), Image.fromarray(b), crop_border=2, y_channel=True)
    assert got == pytest.approx(expected)


def _matlab_ssim_index(img1: np.ndarray, img2: np.ndarray) -> float:
    """Direct transcription of Wang et al.'s ssim_index.m (filter2 'valid', L = 255)."""
    ax = np.arange(-5, 6)
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * 1.5**2))
    window = g / g.sum()  # fspecial('gaussian', 11, 1.5)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    f = lambda x: correlate2d(x, window, mode="valid")  # noqa: E731
    mu1, mu2 = f(img1), f(img2)
    s1 = f(img1 * img1) - mu1**2
    s2 = f(img2 * img2) - mu2**2
    s12 = f(img1 * img2) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


def test_ssim_matches_matlab_formula() -> None:
    # Result: agreement to ~1e-15 (0.7206487357036) on grey and per-channel colour images, so the skimage
    # settings in srweb.evaluation.metrics are the MATLAB ssim_index of the SR literature.
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:40, 0:48]
    base = 120 + 80 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    a = np.clip(base + rng.normal(0, 4, base.shape), 0, 255)
    b = np.clip(base + rng.normal(0, 12, base.shape), 0, 255)
    ref = _matlab_ssim_index(a, b)
    assert 0.3 < ref < 0.99
    assert ssim(a, b, crop_border=0, y_channel=False) == pytest.approx(ref, abs=1e-10)
    rgb_a = np.stack([a, b, a], axis=2)
    rgb_b = np.stack([b, a, a], axis=2)
    ref_rgb = np.mean([_matlab_ssim_index(rgb_a[..., c], rgb_b[..., c]) for c in range(3)])
    assert ssim(rgb_a, rgb_b, crop_border=0, y_channel=False) == pytest.approx(ref_rgb, abs=1e-10)
    y_ref = _matlab_ssim_index(rgb_to_y_np(rgb_a)[3:-3, 3:-3], rgb_to_y_np(rgb_b)[3:-3, 3:-3])
    assert ssim(rgb_a, rgb_b, crop_border=3, y_channel=True) == pytest.approx(y_ref, abs=1e-10)


def test_protocol_dict() -> None:
    assert protocol(3, "Set5") == {"crop_border": 3, "dataset": "Set5", "channel": "y", "degradation": "matlab-bicubic"}
