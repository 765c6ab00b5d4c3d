"""``srweb compare``: the same crop of one image upscaled by several models, side by side.

The HR image is mod-cropped and degraded by MATLAB bicubic (the evaluation protocol); each
method upscales that LR, and the figure shows the chosen crop of every result next to the HR
one, enlarged with square pixels, labelled with the method and its PSNR (Y, shave = scale) on
the whole image. Used for the README's SRResNet vs SRGAN figure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from srweb.data.folders import make_lr, mod_crop, read_rgb8
from srweb.inference.upscaler import Upscaler
from srweb.evaluation.metrics import psnr, ssim

LABEL_HEIGHT = 22
MAX_ZOOM = 8  # a 512-pixel crop at x8 is a 4096-pixel-high figure


@dataclass(frozen=True)
class MethodResult:
    """One method's SR of the degraded image: (H, W, 3) uint8 RGB, its Y-channel PSNR/SSIM (shave =
    scale) against the HR image, and the seconds its upscale took."""

    name: str
    sr: np.ndarray
    psnr: float
    ssim: float
    seconds: float


def compare_methods(
    hr: np.ndarray, scale: int, methods: list[str], upscaler: Callable[[str, int], Upscaler] | None = None
) -> tuple[np.ndarray, list[MethodResult]]:
    """Mod-crop ``hr`` ((H, W, 3) uint8 RGB), degrade it with MATLAB bicubic, and upscale the LR with
    each method (weights name or path, ``bicubic``, ``nearest``; ``upscaler(name, scale)`` makes its
    Upscaler, fp32 by default). Returns the cropped HR and one result per method, in order."""
    hr = mod_crop(hr, scale)
    lr = Image.fromarray(make_lr(hr, scale))
    make = upscaler or (lambda name, s: Upscaler(name, s, precision="fp32"))
    results = []
    for method in methods:
        up = make(method, scale)
        start = time.perf_counter()
        sr = np.asarray(up.upscale(lr).convert("RGB"))
        seconds = time.perf_counter() - start
        results.append(
            MethodResult(
                up.name,
                sr,
                psnr(sr, hr, crop_border=scale, y_channel=True),
                ssim(sr, hr, crop_border=scale, y_channel=True),
                seconds,
            )
        )
    return hr, results


def crops_figure(hr: np.ndarray, results: list[MethodResult], box: tuple[int, int, int], zoom: int = 2) -> Image.Image:
    """The crop ``box`` = (x, y, size) in HR pixels of each result and of HR, side by side, enlarged
    ``zoom`` times with square pixels and labelled with the method and its PSNR."""
    x, y, size = box
    if not 1 <= zoom <= MAX_ZOOM:
        raise ValueError(f"zoom must be 1 to {MAX_ZOOM}, got {zoom}")
    if size <= 0 or x < 0 or y < 0 or x + size > hr.shape[1] or y + size > hr.shape[0]:
        raise ValueError(f"crop {x},{y}+{size} is outside the {hr.shape[1]}x{hr.shape[0]} image")
    panels = [(f"{r.name}  {r.psnr:.2f} dB", r.sr) for r in results] + [("HR (ground truth)", hr)]
    side = size * zoom
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    # A column is as wide as its crop, or as its label when that is wider (small crops).
    widths = [max(side, int(measure.textlength(label)) + 4) for label, _ in panels]
    figure = Image.new("RGB", (sum(widths) + 4 * (len(panels) - 1), side + LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(figure)
    left = 0
    for (label, img), width in zip(panels, widths):
        crop = Image.fromarray(np.ascontiguousarray(img[y : y + size, x : x + size]))
        figure.paste(crop.resize((side, side), Image.NEAREST), (left, LABEL_HEIGHT))
        draw.text((left + 2, 4), label, fill="black")
        left += width + 4
    return figure


def side_by_side(
    image: str | Path, scale: int, methods: list[str], box: tuple[int, int, int], zoom: int = 2
) -> Image.Image:
    """Figure of crop ``box`` = (x, y, size) in HR pixels for each method and for HR."""
    hr = mod_crop(read_rgb8(image), scale)
    crops_figure(hr, [], box, zoom)  # a crop outside the image or a bad zoom fails before any model runs
    hr, results = compare_methods(hr, scale, methods)
    return crops_figure(hr, results, box, zoom)
