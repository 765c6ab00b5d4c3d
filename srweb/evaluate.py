"""The classic SR evaluation: HR mod-crop, MATLAB-bicubic LR, PSNR/SSIM on Y with the scale shaved."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from srweb.data.folders import list_images, make_lr, mod_crop, read_rgb8
from srweb.data.samples import benchmark_path
from srweb.imaging import ImageError, to_rgb8
from srweb.metrics import protocol, psnr, ssim
from srweb.resize import imresize_np

SRFn = Callable[[Image.Image], Image.Image]


@dataclass
class EvalResult:
    """Scores of one model on one dataset at one scale.

    Attributes:
        dataset: dataset name.
        scale: upscaling factor.
        protocol: how it was measured (:func:`srweb.metrics.protocol`).
        images: per image ``{"image", "psnr", "ssim"}`` in file order.
        psnr: mean PSNR (dB) over images.
        ssim: mean SSIM over images.
    """

    dataset: str
    scale: int
    protocol: dict
    images: list[dict] = field(default_factory=list)
    psnr: float = math.nan
    ssim: float = math.nan

    def to_dict(self) -> dict:
        """JSON-serialisable dict (an infinite PSNR, i.e. a perfect image, becomes ``None``)."""

        def clean(value: object) -> object:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        return clean(asdict(self))  # type: ignore[return-value]


def bicubic_sr(scale: int) -> SRFn:
    """The baseline ``sr_fn``: MATLAB bicubic upscaling by ``scale``, uint8 RGB out."""

    def upscale(img: Image.Image) -> Image.Image:
        return Image.fromarray(imresize_np(np.asarray(to_rgb8(img)), scale))

    return upscale


def evaluate(sr_fn: SRFn, dataset_dir: str | os.PathLike, scale: int, *, name: str = "", progress: bool = False) -> EvalResult:
    """Run ``sr_fn`` on every image of a benchmark folder under the classic protocol.

    Each HR image (8-bit RGB) is mod-cropped to a multiple of ``scale``; its LR (MATLAB
    bicubic, uint8 RGB PIL image) goes to ``sr_fn``, whose output must be HR-sized; PSNR and
    SSIM are taken on Y with ``scale`` pixels shaved.

    Args:
        sr_fn: LR PIL image -> SR PIL image.
        dataset_dir: folder, or a name resolved by :func:`srweb.data.samples.benchmark_path`.
        scale: integer factor.
        name: dataset name to record; defaults to the folder name.
        progress: show a tqdm bar.

    Raises:
        ValueError: missing/empty dataset, image too small, or ``sr_fn`` output of the wrong size.
    """
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    scale = int(scale)
    root = benchmark_path(dataset_dir)
    name = name or root.name
    images = []
    for path in tqdm(list_images(root), desc=f"{name} x{scale}", disable=not progress):
        hr = mod_crop(read_rgb8(path), scale)
        if min(hr.shape[:2]) <= 2 * scale:
            raise ImageError(f"{path}: too small to evaluate at x{scale}")
        sr = sr_fn(Image.fromarray(make_lr(hr, scale)))
        if sr.size != (hr.shape[1], hr.shape[0]):
            raise ValueError(f"{path.name}: sr_fn returned {sr.size[0]}x{sr.size[1]}, expected {hr.shape[1]}x{hr.shape[0]}")
        out = np.asarray(to_rgb8(sr))
        images.append(
            {
                "image": path.name,
                "psnr": psnr(hr, out, crop_border=scale, y_channel=True),
                "ssim": ssim(hr, out, crop_border=scale, y_channel=True),
            }
        )
    return EvalResult(
        dataset=name,
        scale=scale,
        protocol=protocol(scale, name),
        images=images,
        psnr=float(np.mean([r["psnr"] for r in images])),
        ssim=float(np.mean([r["ssim"] for r in images])),
    )
