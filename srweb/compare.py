"""``srweb compare``: the same crop of one image upscaled by several models, side by side.

The HR image is mod-cropped and degraded by MATLAB bicubic (the evaluation protocol); each
method upscales that LR, and the figure shows the chosen crop of every result next to the HR
one, enlarged with square pixels, labelled with the method and its PSNR (Y, shave = scale) on
the whole image. Used for the README's SRResNet vs SRGAN figure.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from srweb.data.folders import make_lr, mod_crop, read_rgb8
from srweb.inference import Upscaler
from srweb.metrics import psnr

LABEL_HEIGHT = 22


def side_by_side(image: str | Path, scale: int, methods: list[str], box: tuple[int, int, int],
                 zoom: int = 2) -> Image.Image:
    """Figure of crop ``box`` = (x, y, size) in HR pixels for each method and for HR."""
    hr = mod_crop(read_rgb8(image), scale)
    x, y, size = box
    if size <= 0 or x < 0 or y < 0 or x + size > hr.shape[1] or y + size > hr.shape[0]:
        raise ValueError(f"crop {x},{y}+{size} is outside the {hr.shape[1]}x{hr.shape[0]} image")
    lr = Image.fromarray(make_lr(hr, scale))
    panels = []
    for method in methods:
        sr = np.asarray(Upscaler(method, scale, precision="fp32").upscale(lr).convert("RGB"))
        panels.append((f"{method}  {psnr(sr, hr, crop_border=scale, y_channel=True):.2f} dB", sr))
    panels.append(("HR (ground truth)", hr))
    side = size * zoom
    figure = Image.new("RGB", (len(panels) * (side + 4) - 4, side + LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(figure)
    for i, (label, img) in enumerate(panels):
        crop = Image.fromarray(np.ascontiguousarray(img[y : y + size, x : x + size]))
        figure.paste(crop.resize((side, side), Image.NEAREST), (i * (side + 4), LABEL_HEIGHT))
        draw.text((i * (side + 4) + 2, 4), label, fill="black")
    return figure


def cmd_compare(args: argparse.Namespace) -> int:
    x, y, size = args.crop
    figure = side_by_side(args.image, args.scale, args.weights, (x, y, size), zoom=args.zoom)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(out)
    print(out)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="side-by-side crops of several models on one image")
    p.add_argument("--image", required=True, help="HR image (degraded by MATLAB bicubic, as in evaluation)")
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--weights", nargs="+", required=True, help="weights names or paths, or bicubic")
    p.add_argument("--crop", type=int, nargs=3, required=True, metavar=("X", "Y", "SIZE"), help="HR pixels")
    p.add_argument("--zoom", type=int, default=2)
    p.add_argument("--out", required=True, help="PNG to write")
    p.set_defaults(func=cmd_compare)
