"""Benchmark-style HR folders (Set5, Set14, BSD100, Urban100, any user folder) as LR/HR pairs.

Every image is read as 8-bit RGB (grey replicated, 16-bit scaled, alpha dropped), HR is
mod-cropped to a multiple of the scale and LR is MATLAB bicubic, quantised to uint8 as
MATLAB does for uint8 images: the classic SR protocol.

One policy for every folder of images (benchmark folders in ``srweb eval``, training folders in
``srweb train`` and ``srweb prepare``): a file that cannot be used (empty, not an image, truncated,
too large, too small for the scale or patch) is skipped with a :class:`SkippedImage` warning naming
it and the reason (:func:`skip_image`; one line from the command line) and the job goes on; when
no usable image remains, a ``ValueError`` says so.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from srweb.imaging.io import ImageError, image_size, is_image_file, load_image, rgb_to_y, to_rgb8
from srweb.imaging.resize import imresize_np

CHANNELS = ("rgb", "y")


class SkippedImage(UserWarning):
    """A file left out of a folder of images; the message names it and says why."""


def skip_image(message: str, *, stacklevel: int = 2) -> None:
    """Report a file left out of a folder of images: a :class:`SkippedImage` warning (the
    command-line entry points show it as one line: :func:`show_warnings_as_lines`)."""
    warnings.warn(message, SkippedImage, stacklevel=stacklevel + 1)


def skip_file(exc: ImageError, path: Path, skipped: list[dict]) -> None:
    """Report ``path`` left out for ``exc`` (:func:`skip_image`) and record it in ``skipped`` as
    ``{"image": name, "reason": the error without the file name it starts with}``."""
    skip_image(f"{exc}; skipped", stacklevel=3)
    skipped.append({"image": path.name, "reason": str(exc).removeprefix(f"{path}: ")})


def skipped_reasons(skipped: list[dict]) -> str:
    """``"a.png: empty file; b.png: not a readable image file"``: why each file was left out."""
    return "; ".join(f"{r['image']}: {r['reason']}" for r in skipped)


def show_warnings_as_lines() -> None:
    """For a process's entry point (``srweb`` commands, training workers): each distinct warning
    srweb raises (a :class:`SkippedImage`, a slow tile size, ...) is printed once, as ``srweb:
    warning: MESSAGE`` above any progress bar (a training run validates on the same folder again
    and again); other libraries' warnings are unchanged."""
    previous = warnings.showwarning
    if getattr(previous, "srweb_lines", False):  # installed already
        return
    shown: set[str] = set()
    package = str(Path(__file__).resolve().parents[1])

    def show(message, category, filename, lineno, file=None, line=None):
        if not (issubclass(category, SkippedImage) or str(filename).startswith(package)):
            return previous(message, category, filename, lineno, file, line)
        if str(message) not in shown:
            shown.add(str(message))
            tqdm.write(f"srweb: warning: {message}", file=sys.stderr)

    show.srweb_lines = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def list_images(root: str | os.PathLike, *, skipped: list[dict] | None = None) -> list[Path]:
    """Sorted image files directly inside ``root`` whose header srweb can read.

    Files without an image suffix are left out; image files whose header cannot be read (empty,
    not an image, a decompression bomb, ...) are skipped with a line naming them and the reason
    (:func:`skip_image`), and appended to ``skipped`` as ``{"image": name, "reason": ...}``.
    A truncated file passes: only decoding it finds that out.

    Raises:
        ValueError: ``root`` is not a directory or holds no readable image.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    files, refused = [], []
    for path in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")):
        if not is_image_file(path):
            skip_image(f"{path}: not an image file; skipped")
            continue
        try:
            image_size(path)  # header only: cheap, catches non-images and bombs early
        except ImageError as exc:
            skip_file(exc, path, refused)
            continue
        files.append(path)
    if skipped is not None:
        skipped.extend(refused)
    if not files:
        if refused:
            raise ValueError(f"{root}: no usable image file (all {len(refused)} skipped: {skipped_reasons(refused)})")
        raise ValueError(f"{root}: no image files found")
    return files


def read_rgb8(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file as ``HxWx3`` uint8 RGB (raises :class:`ImageError` naming the file)."""
    return np.asarray(to_rgb8(load_image(path)))


def mod_crop(img: np.ndarray, multiple: int) -> np.ndarray:
    """Crop bottom/right so height and width are multiples of ``multiple``."""
    h, w = img.shape[:2]
    return img[: h - h % multiple, : w - w % multiple]


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """LR of a mod-cropped uint8 HR: MATLAB ``imresize(hr, 1/scale, 'bicubic')`` in uint8."""
    return imresize_np(hr, 1 / scale)


def to_tensor(img: np.ndarray, channels: str = "rgb") -> torch.Tensor:
    """uint8 ``HxWx3`` RGB -> float32 ``(C, H, W)`` in [0, 1]; ``channels="y"`` gives MATLAB Y, C = 1."""
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)
    return rgb_to_y(t) if channels == "y" else t


def check_channels(channels: str) -> str:
    """Return ``channels`` if it is ``"rgb"`` or ``"y"``, else raise ValueError."""
    if channels not in CHANNELS:
        raise ValueError(f"channels must be one of {CHANNELS}, got {channels!r}")
    return channels


def make_item(
    hr: np.ndarray, lr: np.ndarray, hr_path: Path, lr_path: Path, channels: str, pre_upsample: bool, scale: int
) -> dict:
    """The dataset item dict shared by all srweb datasets (see :class:`HRFolderDataset`)."""
    if pre_upsample:
        lr = imresize_np(lr, scale)
    return {
        "lr": to_tensor(lr, channels),
        "hr": to_tensor(hr, channels),
        "lr_path": str(lr_path),
        "hr_path": str(hr_path),
    }


class HRFolderDataset(Dataset):
    """LR/HR pairs made from a folder of HR images by the classic SR degradation.

    Items are ``{"lr", "hr", "lr_path", "hr_path"}``: float32 ``(C, H, W)`` tensors in [0, 1],
    ``C = 3`` (RGB) or 1 (Y, i.e. (16 + 65.481 R + 128.553 G + 24.966 B) / 255). ``hr`` is
    mod-cropped to a multiple of ``scale``; ``lr`` is its MATLAB-bicubic downscale quantised to
    uint8, ``scale`` times smaller, or, with ``pre_upsample``, that LR bicubic-upsampled back
    to HR size (for SRCNN/VDSR-style models). LR is generated, so ``lr_path`` is the HR file.

    Args:
        root: folder of HR images (non-image files are skipped with a warning).
        scale: integer upscaling factor.
        channels: ``"rgb"`` or ``"y"``.
        pre_upsample: return the bicubic-upsampled LR instead of the small one.

    Raises:
        ValueError: missing or empty folder, bad scale or channels.
    """

    def __init__(self, root: str | os.PathLike, scale: int, channels: str = "rgb", pre_upsample: bool = False):
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.root = Path(root).expanduser()
        self.scale = int(scale)
        self.channels = check_channels(channels)
        self.pre_upsample = pre_upsample
        self.files = list_images(self.root)
        # (hr, lr) sources; lr None = generate with MATLAB bicubic (what PatchPairs reads).
        self.pairs: list[tuple[Path, Path | None]] = [(f, None) for f in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        hr = mod_crop(read_rgb8(path), self.scale)
        if hr.size == 0:
            raise ImageError(f"{path}: smaller than the scale factor {self.scale}")
        return make_item(hr, make_lr(hr, self.scale), path, path, self.channels, self.pre_upsample, self.scale)
