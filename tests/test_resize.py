"""MATLAB bicubic imresize: hand-derived taps, shape rules, and the published Set5 baselines."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SET5
from srweb.imaging.io import rgb_to_y_np
from srweb.imaging.resize import cubic, imresize, imresize_np


# Cubic kernel (a = -0.5) at the distances the taps fall on, worked out by hand:
# cubic(0.25) = 1.5/64 - 2.5/16 + 1, cubic(0.75) = 1.5*27/64 - 2.5*9/16 + 1, ...
C025, C075, C125, C175 = 0.8671875, 0.2265625, -0.0703125, -0.0234375


def test_cubic_kernel_values() -> None:
    assert cubic(np.array([0.0, 0.25, 0.75, 1.0, 1.25, 1.75, 2.0, 2.5])).tolist() == pytest.approx(
        [1.0, C025, C075, 0.0, C125, C175, 0.0, 0.0]
    )


def test_upsample_impulse_x2() -> None:
    # x2 up: output k (1-based) samples u = k/2 + 1/4; input j gets weight cubic(u - j).
    # An impulse at input 3 (of 6) gets cubic(-2.25), cubic(-1.75), ... at k = 1, 2, ...
    x = torch.zeros(1, 1, 6, dtype=torch.float64)
    x[..., 2] = 1
    out = imresize(x, size=(1, 12))[0, 0]
    expected = [0, C175, C125, C075, C025, C025, C075, C125, C175, 0, 0, 0]
    assert out.tolist() == pytest.approx(expected, abs=1e-12)


def test_downsample_ramp_x2_with_mirrored_border() -> None:
    # x2 down with antialiasing: kernel 0.5*cubic(d/2), 8 taps at distances +-0.5..+-3.5,
    # output k samples u = 2k - 1/2. Out-of-range taps mirror as [1..n, n..1] (edge repeated).
    w = 0.5 * np.array([C175, C125, C075, C025, C025, C075, C125, C175])
    ramp = np.arange(8, dtype=np.float64) ** 2  # non-linear so the border is visible
    padded = np.concatenate([ramp[2::-1], ramp, ramp[:-4:-1]])  # index -2..10 -> mirror
    # 0-based output k: taps 2k-3 .. 2k+4 of the input, i.e. padded[2k : 2k+8].
    expected = [padded[2 * k : 2 * k + 8] @ w for k in range(4)]
    out = imresize(torch.from_numpy(ramp).view(1, 1, 8), size=(1, 4))[0, 0]
    assert out.tolist() == pytest.approx(expected, abs=1e-12)
    # Interior check independent of the mirror: symmetric taps reproduce a linear ramp's midpoints.
    lin = imresize(torch.arange(16.0, dtype=torch.float64).view(1, 1, 16), size=(1, 8))[0, 0]
    assert lin[2:6].tolist() == pytest.approx([4.5, 6.5, 8.5, 10.5])


@pytest.mark.parametrize(
    ("h", "w", "scale", "out"), [(10, 7, 0.5, (5, 4)), (9, 9, 1 / 3, (3, 3)), (5, 3, 2, (10, 6)), (7, 7, 0.3, (3, 3))]
)
def test_output_shape_is_ceil(h: int, w: int, scale: float, out: tuple[int, int]) -> None:
    assert imresize(torch.rand(2, 3, h, w), scale).shape == (2, 3, *out)
    assert imresize(torch.rand(3, h, w), scale).shape == (3, *out)


def test_constant_preserved_and_dtype_kept() -> None:
    x = torch.full((1, 3, 13, 17), 0.37)
    for s in (2, 3, 4, 0.5, 1 / 3):
        y = imresize(x, s)
        assert y.dtype == torch.float32
        assert torch.allclose(y, torch.full_like(y, 0.37), atol=1e-6)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        imresize(torch.rand(3, 4, 4))
    with pytest.raises(TypeError):
        imresize(torch.zeros(3, 4, 4, dtype=torch.uint8), 2)


def test_numpy_uint8_roundtrip() -> None:
    yy, xx = np.mgrid[0:24, 0:18]
    smooth = 128 + 60 * np.sin(yy / 4.0)[..., None] * np.cos(xx / 5.0)[..., None] * np.ones(3)
    img = smooth.astype(np.uint8)  # smooth, so no saturation at the passes
    small = imresize_np(img, 0.5)
    assert small.dtype == np.uint8 and small.shape == (12, 9, 3)
    gray = imresize_np(img[..., 0], 2)
    assert gray.shape == (48, 36)
    ref = imresize(torch.from_numpy(img[..., 0].astype(np.float64))[None], 2)[0].numpy()
    # Only the rounding differs: 0.5 after pass one (amplified by sum|w| < 1.2) + 0.5 at the end.
    assert np.abs(gray.astype(float) - ref).max() <= 1.1


def bicubic_set5_psnr(scale: int) -> float:
    values = []
    for path in sorted(SET5.glob("*.png")):
        hr = np.asarray(Image.open(path).convert("RGB"))
        hr = hr[: hr.shape[0] - hr.shape[0] % scale, : hr.shape[1] - hr.shape[1] % scale]
        sr = imresize_np(imresize_np(hr, 1 / scale), scale)
        d = (rgb_to_y_np(hr) - rgb_to_y_np(sr))[scale:-scale, scale:-scale]
        values.append(10 * np.log10(255**2 / np.mean(d**2)))
    return float(np.mean(values))


@pytest.mark.parametrize(("scale", "published"), [(2, 33.66), (3, 30.39), (4, 28.42)])
def test_set5_bicubic_baseline(scale: int, published: float) -> None:
    assert bicubic_set5_psnr(scale) == pytest.approx(published, abs=0.03)


def test_float32_matches_float64_and_is_fast() -> None:
    import time

    x = torch.rand(3, 1356, 2040)
    best = min(_timed(lambda: imresize(x, 1 / 4), time.perf_counter) for _ in range(3))
    assert best < 1.0, f"x4 downscale of 2040x1356 took {best:.2f}s"
    small = x[:, :64, :80]
    assert torch.allclose(imresize(small, 1 / 3), imresize(small.double(), 1 / 3).float(), atol=1e-5)


def _timed(fn, clock) -> float:
    start = clock()
    fn()
    return clock() - start


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu() -> None:
    x = torch.rand(2, 3, 40, 30)
    assert torch.allclose(imresize(x.cuda(), 2).cpu(), imresize(x, 2), atol=1e-5)
