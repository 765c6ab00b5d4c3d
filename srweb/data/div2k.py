"""DIV2K (Agustsson & Timofte, NTIRE 2017) in its official layout, with verified download.

Layout under ``root`` (train images 0001-0800, valid 0801-0900)::

    DIV2K_train_HR/0001.png
    DIV2K_train_LR_bicubic/X2/0001x2.png   (X3, X4 alike)
    DIV2K_train_LR_unknown/X2/0001x2.png
    DIV2K_valid_HR/0801.png ...

``srweb prepare`` (:mod:`srweb.data.prepare`) writes the same layout from any HR folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset
from tqdm.auto import tqdm

from srweb.config import get_settings
from srweb.data.catalog import CATALOG, DIV2K_URL
from srweb.data.download import DownloadError, install  # noqa: F401 (DownloadError: raised from here, re-exported)
from srweb.data.folders import check_channels, make_item, make_lr, mod_crop, read_rgb8
from srweb.imaging.fileio import atomic_save_png
from srweb.imaging.io import ImageError

BASE_URL = DIV2K_URL
SPLITS = ("train", "valid")
TRACKS = ("bicubic", "unknown")


def is_div2k_tree(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds DIV2K's folders (``DIV2K_train_HR``, ...), or a ``DIV2K`` child that does."""
    root = Path(root).expanduser()
    return (root / "DIV2K_train_HR").is_dir() or (root / "DIV2K" / "DIV2K_train_HR").is_dir()


def hr_dir(root: Path, split: str) -> Path:
    """``root/DIV2K_{split}_HR``."""
    return root / f"DIV2K_{split}_HR"


def lr_dir(root: Path, split: str, track: str, scale: int) -> Path:
    """``root/DIV2K_{split}_LR_{track}/X{scale}``."""
    return root / f"DIV2K_{split}_LR_{track}" / f"X{scale}"


def download_div2k(
    root: str | os.PathLike,
    split: str = "train",
    scale: int | None = None,
    track: str = "bicubic",
    *,
    progress: bool = True,
) -> None:
    """Fetch, verify and extract the official HR archive of ``split`` and, with ``scale``, its LR
    archive (sizes and SHA-256 pinned in :data:`srweb.data.catalog.CATALOG`) into ``root``.

    Folders already present are left alone; archives are deleted after extraction.
    """
    root = Path(root).expanduser()
    archives = CATALOG["DIV2K"].select((split,), (scale,) if scale is not None else (), track)
    install(archives, root, root / ".downloads", progress=progress)


def _resolve_root(root: str | os.PathLike | None) -> Path:
    if root is None:
        return get_settings().data_root / "DIV2K"
    root = Path(root).expanduser()
    if not any(root.glob("DIV2K_*")) and (root / "DIV2K").is_dir():
        return root / "DIV2K"
    return root


class DIV2K(Dataset):
    """DIV2K LR/HR pairs read from the official layout.

    Items are ``{"lr", "hr", "lr_path", "hr_path"}``: float32 ``(C, H, W)`` in [0, 1], RGB
    (C = 3) or MATLAB Y (C = 1); ``hr`` is cropped to exactly ``scale`` x the LR size. When the
    bicubic LR folder (or some files) is missing, LR is generated with MATLAB bicubic and
    cached in the layout (under the settings' cache dir if ``root`` is read-only).

    Args:
        root: folder holding ``DIV2K_train_HR`` etc. (or its parent with a ``DIV2K`` child);
            default ``data_root/DIV2K``.
        scale: 2, 3 or 4 (any integer works for generated LR).
        split: ``"train"`` or ``"valid"``.
        track: ``"bicubic"`` or ``"unknown"`` (the latter cannot be generated, only downloaded).
        download: fetch missing official archives (several GB for train HR).
        channels: ``"rgb"`` or ``"y"``.
        pre_upsample: return the LR bicubic-upsampled to HR size.

    Raises:
        ValueError: missing/empty HR folder, unknown split/track, missing "unknown" LR.
        DownloadError: ``download=True`` and the download failed (e.g. offline).
    """

    def __init__(
        self,
        root: str | os.PathLike | None,
        scale: int,
        split: str = "train",
        track: str = "bicubic",
        download: bool = False,
        channels: str = "rgb",
        pre_upsample: bool = False,
        progress: bool = True,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if track not in TRACKS:
            raise ValueError(f"track must be one of {TRACKS}, got {track!r}")
        self.root, self.scale, self.split, self.track = _resolve_root(root), int(scale), split, track
        self.channels = check_channels(channels)
        self.pre_upsample = pre_upsample
        if download:
            download_div2k(self.root, split, self.scale, track, progress=progress)
        folder = hr_dir(self.root, split)
        if not folder.is_dir():
            raise ValueError(f"{folder}: DIV2K HR folder not found (use download=True to fetch it from {BASE_URL})")
        self.hr_files = sorted(folder.glob("*.png"))
        if not self.hr_files:
            raise ValueError(f"{folder}: no PNG images")
        self.lr_files = self._lr_files(progress)
        self.pairs: list[tuple[Path, Path | None]] = list(zip(self.hr_files, self.lr_files))

    def _lr_files(self, progress: bool) -> list[Path]:
        rel = lr_dir(Path(), self.split, self.track, self.scale)
        folders = [self.root / rel, get_settings().cache_dir / "DIV2K" / rel]
        names = [f"{p.stem}x{self.scale}.png" for p in self.hr_files]
        found = [next((d / n for d in folders if (d / n).is_file()), None) for n in names]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing and self.track != "bicubic":
            raise ValueError(
                f"{folders[0]}: {len(missing)} LR images of track {self.track!r} missing; "
                "this degradation cannot be generated, use download=True"
            )
        if missing:
            out = self._writable(folders)
            for i in tqdm(missing, desc=f"MATLAB bicubic x{self.scale}", disable=not progress):
                hr = mod_crop(read_rgb8(self.hr_files[i]), self.scale)
                atomic_save_png(make_lr(hr, self.scale), out / names[i])
                found[i] = out / names[i]
        return found

    @staticmethod
    def _writable(folders: list[Path]) -> Path:
        for folder in folders:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError:
                continue
            if os.access(folder, os.W_OK):
                return folder
        raise ValueError(f"cannot write generated LR images to any of {[str(f) for f in folders]}")

    def __len__(self) -> int:
        return len(self.hr_files)

    def __getitem__(self, index: int) -> dict:
        hr_path, lr_path = self.pairs[index]
        lr = read_rgb8(lr_path)
        hr = read_rgb8(hr_path)
        h, w = lr.shape[0] * self.scale, lr.shape[1] * self.scale
        if hr.shape[0] < h or hr.shape[1] < w:
            raise ImageError(f"{hr_path}: HR {hr.shape[1]}x{hr.shape[0]} smaller than {self.scale} x LR {lr_path}")
        return make_item(hr[:h, :w], lr, hr_path, lr_path, self.channels, self.pre_upsample, self.scale)
