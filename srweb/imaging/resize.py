"""MATLAB-compatible bicubic ``imresize``: the degradation of the classic SR protocol.

Follows MATLAB's ``imresize(x, scale, 'bicubic')`` step by step: cubic kernel with a = -0.5,
kernel stretched by 1/scale when shrinking (antialiasing), output size ``ceil(in * scale)``,
sample positions ``u = x / scale + 0.5 * (1 - 1 / scale)``, out-of-range taps mirrored
(``[1..n, n..1]``), weights normalised per output pixel, and the two 1-D passes applied in
order of increasing scale (the larger shrink first). PIL and OpenCV bicubic differ from this
and shift benchmark PSNR by tenths of a dB.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


@lru_cache(maxsize=64)
def contributions(
    in_length: int, out_length: int, scale: float, antialias: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-pixel taps of one 1-D resize, as MATLAB's ``contributions``.

    Returns:
        ``(weights, indices)``, both ``(out_length, taps)``; indices are 0-based and already
        mirrored into ``[0, in_length)``; each weights row sums to 1.
    """
    width = 4.0
    if scale < 1 and antialias:
        kernel = lambda d: scale * cubic(scale * d)  # noqa: E731
        width /= scale
    else:
        kernel = cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    ind = left[:, None] + np.arange(taps)[None, :]
    weights = kernel(u[:, None] - ind)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length)[::-1]])
    ind = mirror[np.mod(ind - 1, 2 * in_length).astype(np.int64)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], ind[:, keep]


def _resize_dim(x: torch.Tensor, dim: int, out_length: int, scale: float, antialias: bool) -> torch.Tensor:
    weights, ind = contributions(x.shape[dim], out_length, scale, antialias)
    w = torch.from_numpy(weights).to(x.device, x.dtype)
    idx = torch.from_numpy(ind).to(x.device)
    shape = [1] * x.dim()
    shape[dim] = out_length
    # Gather-and-accumulate per tap: O(out * taps) work instead of a dense (out x in) matmul.
    out = x.index_select(dim, idx[:, 0]) * w[:, 0].view(shape)
    for k in range(1, idx.shape[1]):
        out += x.index_select(dim, idx[:, k]) * w[:, k].view(shape)
    return out


def imresize(
    x: torch.Tensor, scale: float | None = None, size: tuple[int, int] | None = None, antialias: bool = True
) -> torch.Tensor:
    """MATLAB ``imresize(x, scale, 'bicubic')`` on a float tensor.

    Args:
        x: ``(C, H, W)`` or ``(N, C, H, W)`` float32/float64 on any device; values unclamped.
        scale: factor for both sides; output is ``ceil(H * scale) x ceil(W * scale)``.
        size: ``(out_h, out_w)`` instead of ``scale`` (per-side factors ``out / in``).
        antialias: widen the kernel when shrinking, as MATLAB does by default.

    Returns:
        Tensor of the same dtype, device and rank, not rounded or clamped.
    """
    return _imresize(x, scale, size, antialias, quantize=False)


def _imresize(
    x: torch.Tensor, scale: float | None, size: tuple[int, int] | None, antialias: bool, quantize: bool
) -> torch.Tensor:
    if not x.is_floating_point():
        raise TypeError(f"imresize needs a float tensor, got {x.dtype}")
    if x.dim() not in (3, 4):
        raise ValueError(f"imresize expects (C,H,W) or (N,C,H,W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale or size")
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        scales = (float(scale), float(scale))
        size = (math.ceil(h * scale), math.ceil(w * scale))
    else:
        size = (int(size[0]), int(size[1]))
        if min(size) <= 0:
            raise ValueError(f"size must be positive, got {size}")
        scales = (size[0] / h, size[1] / w)
    # Stable sort like MATLAB's sort(scale): rows first on ties.
    order = sorted(range(2), key=lambda i: scales[i])
    for i in order:
        x = _resize_dim(x, x.dim() - 2 + i, size[i], scales[i], antialias)
        if quantize:
            # MATLAB keeps uint8 between the two passes: round half away from zero, saturate.
            x = torch.floor(x.clamp(0, 255) + 0.5)
    return x


def imresize_np(
    img: np.ndarray, scale: float | None = None, size: tuple[int, int] | None = None, antialias: bool = True
) -> np.ndarray:
    """:func:`imresize` for ``HxW`` or ``HxWxC`` numpy images.

    uint8 input gives uint8 output rounded and saturated after each 1-D pass, exactly as
    MATLAB does for uint8; computation is float64. Float input gives float64 output, unclamped.
    """
    arr = np.asarray(img)
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
    t = t[None] if arr.ndim == 2 else t.permute(2, 0, 1)
    out = _imresize(t, scale, size, antialias, quantize=arr.dtype == np.uint8)
    out = out[0] if arr.ndim == 2 else out.permute(1, 2, 0)
    return out.numpy().astype(np.uint8) if arr.dtype == np.uint8 else out.numpy()
