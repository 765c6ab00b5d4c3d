"""The classic SR evaluation: HR mod-crop, MATLAB-bicubic LR, PSNR/SSIM on Y with the scale shaved."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from srweb.data.degradations import degrade, describe, eval_config, eval_rng
from srweb.data.folders import list_images, make_lr, mod_crop, read_rgb8, skip_file, skipped_reasons
from srweb.data.samples import benchmark_path
from srweb.imaging.io import ImageError, to_rgb8
from srweb.evaluation.metrics import protocol, psnr, ssim
from srweb.imaging.resize import imresize_np

SRFn = Callable[[Image.Image], Image.Image]


@dataclass
class EvalResult:
    """Scores of one model on one dataset at one scale.

    Attributes:
        dataset: dataset name; when files of the folder were skipped, marked with how many images
            were scored, e.g. ``"Set5 (4 of 5 images scored)"``, so that a score over part of a
            benchmark is never filed (in the database, a card, the leaderboard) as the benchmark's.
        scale: upscaling factor.
        protocol: how it was measured (:func:`srweb.evaluation.metrics.protocol`).
        images: per image ``{"image", "psnr", "ssim"}`` in file order.
        psnr: mean PSNR (dB) over images.
        ssim: mean SSIM over images.
        skipped: per image file left out ``{"image", "reason"}`` (empty, not an image, truncated,
            too large, too small for the scale), in file order.
    """

    dataset: str
    scale: int
    protocol: dict
    images: list[dict] = field(default_factory=list)
    psnr: float = math.nan
    ssim: float = math.nan
    skipped: list[dict] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every image file of the folder was scored."""
        return not self.skipped

    @property
    def coverage(self) -> str:
        """``"4 of 5 images scored"``."""
        return f"{len(self.images)} of {len(self.images) + len(self.skipped)} images scored"

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


def _score_image(sr_fn: SRFn, image: str, hr: np.ndarray, lr: np.ndarray, scale: int) -> dict:
    """PSNR/SSIM (Y, ``scale`` px shaved) of ``sr_fn``'s output for one LR against its HR."""
    sr = sr_fn(Image.fromarray(lr))
    if sr.size != (hr.shape[1], hr.shape[0]):
        raise ValueError(f"{image}: sr_fn returned {sr.size[0]}x{sr.size[1]}, expected {hr.shape[1]}x{hr.shape[0]}")
    out = np.asarray(to_rgb8(sr))
    return {
        "image": image,
        "psnr": psnr(hr, out, crop_border=scale, y_channel=True),
        "ssim": ssim(hr, out, crop_border=scale, y_channel=True),
    }


def evaluate(
    sr_fn: SRFn,
    dataset_dir: str | os.PathLike,
    scale: int,
    *,
    name: str = "",
    progress: bool = False,
    degradation: str = "",
) -> EvalResult:
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
        degradation: an evaluation chain of :mod:`srweb.data.degradations` (``jpeg75``, ``jpeg50``,
            ``noise15``, ``realistic``) applied to make each LR, with a fixed seed per image; the
            protocol's ``degradation`` names it, so these scores never mix with the classic ones.

    An image file that cannot be used (empty, not an image, truncated, too large, too small for
    ``scale``) is skipped with a line naming it and the reason (see
    :func:`srweb.data.folders.skip_image`) and recorded in ``skipped``; the result's ``dataset`` then
    says how many images were scored (``"Set5 (4 of 5 images scored)"``).

    Raises:
        ValueError: missing folder, no usable image in it, or ``sr_fn`` output of the wrong size.
    """
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    scale = int(scale)
    chain = eval_config(degradation)  # before any work: an unknown name is one clear error
    root = benchmark_path(dataset_dir)
    name = name or root.name
    images: list[dict] = []
    skipped: list[dict] = []
    files = list_images(root, skipped=skipped)
    for index, path in enumerate(tqdm(files, desc=f"{name} x{scale}", disable=not progress)):
        try:
            rgb = read_rgb8(path)
            hr = mod_crop(rgb, scale)
            if min(hr.shape[:2]) <= 2 * scale:
                raise ImageError(f"{path}: {rgb.shape[1]}x{rgb.shape[0]}, too small to evaluate at x{scale}")
        except ImageError as exc:
            skip_file(exc, path, skipped)
            continue
        lr = degrade(hr, scale, chain, eval_rng(index)) if chain else make_lr(hr, scale)
        images.append(_score_image(sr_fn, path.name, hr, lr, scale))
    if not images:
        raise ValueError(
            f"{root}: no image could be evaluated at x{scale} (all {len(skipped)} skipped: {skipped_reasons(skipped)})"
        )
    skipped.sort(key=lambda r: r["image"])  # file order, as list_images sorts
    if skipped:  # also in the protocol, which the database keeps with the score
        name = f"{name} ({len(images)} of {len(images) + len(skipped)} images scored)"
    return EvalResult(
        dataset=name,
        scale=scale,
        protocol=protocol(scale, name, describe(chain)),
        images=images,
        psnr=float(np.mean([r["psnr"] for r in images])),
        ssim=float(np.mean([r["ssim"] for r in images])),
        skipped=skipped,
    )
