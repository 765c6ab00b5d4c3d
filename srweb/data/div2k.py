"""DIV2K (Agustsson & Timofte, NTIRE 2017) in its official layout, with verified download.

Layout under ``root`` (train images 0001-0800, valid 0801-0900)::

    DIV2K_train_HR/0001.png
    DIV2K_train_LR_bicubic/X2/0001x2.png   (X3, X4 alike)
    DIV2K_train_LR_unknown/X2/0001x2.png
    DIV2K_valid_HR/0801.png ...

``srweb prepare`` (:mod:`srweb.data.prepare`) writes the same layout from any HR folder.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from torch.utils.data import Dataset
from tqdm.auto import tqdm

from srweb.config import get_settings
from srweb.data.folders import check_channels, make_item, make_lr, mod_crop, read_rgb8
from srweb.imaging.fileio import atomic_save_png
from srweb.imaging.io import ImageError

BASE_URL = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
SPLITS = ("train", "valid")
TRACKS = ("bicubic", "unknown")

# Sizes (bytes) and SHA-256 of the official archives, as recorded by TensorFlow Datasets
# (tensorflow_datasets/url_checksums/div2k.txt).
ARCHIVES: dict[str, tuple[int, str]] = {
    "DIV2K_train_HR.zip": (3530603713, "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335"),
    "DIV2K_valid_HR.zip": (448993893, "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc"),
    "DIV2K_train_LR_bicubic_X2.zip": (925390592, "a53a424317575838dadce4bcd97cf7b744d6855f43740ed5f0245af3cf4bd850"),
    "DIV2K_train_LR_bicubic_X3.zip": (427847282, "ad5c8e5507e2765823d3c2c5bd0934842efcd487c5370604c224090898b3163a"),
    "DIV2K_train_LR_bicubic_X4.zip": (246914039, "f006b837f4eb52b82909aa01478e6d6d199eefce932179491d0c9dbb706dde3a"),
    "DIV2K_valid_LR_bicubic_X2.zip": (117763600, "60eed9875c697df51204aa579e2a699e1d5215095788a097ff54dd17e2664d57"),
    "DIV2K_valid_LR_bicubic_X3.zip": (54513392, "04b9a2ed3b4a0715d3924d3ae8514830c3328fac8d30512ce716d6f419e052a3"),
    "DIV2K_valid_LR_bicubic_X4.zip": (31505881, "a50a5d1c4b88de4e8d300d8fb2b904c52fe93b2b298a4899697760d7cbb6d553"),
    "DIV2K_train_LR_unknown_X2.zip": (734182735, "f166eeba119fc55bfc9a99c05561980e7a965382f36640ce8ef626c9f61d122c"),
    "DIV2K_train_LR_unknown_X3.zip": (377245548, "b6455af3b2aa02d76ae3238c49d7aae3b48b0acdc44b5bdc0f4c02d40ebcb43b"),
    "DIV2K_train_LR_unknown_X4.zip": (208956781, "d131c7aad51e0abbdc4433362ce899e5e75f40b9847ead70ee995188e8fd0adb"),
    "DIV2K_valid_LR_unknown_X2.zip": (93433041, "ec50bb084c0011130874efd2ed7859b46e0aa7104c565818d5271ac315e04e0a"),
    "DIV2K_valid_LR_unknown_X3.zip": (48143315, "ebf23a3e1ef6800cae97285d3a50d022d89b62655e685884c0abcc89eec5b809"),
    "DIV2K_valid_LR_unknown_X4.zip": (26695095, "e3897555a98de1157c20974fb6093105fbc1ff5e9caf7bd348f58f6da140fbef"),
}


class DownloadError(OSError):
    """A download or archive that failed; the message says what to do."""


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


def fetch(url: str, dest: Path, size: int | None = None, sha256: str | None = None, *, timeout: float = 60, progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, resuming a ``dest.part`` left by an interrupted run.

    The file is verified (size and SHA-256 when known, else zip integrity) before it is
    renamed into place, so ``dest`` exists only when complete.

    Raises:
        DownloadError: offline/HTTP failure or verification failure (the partial file is removed).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():  # left by a run that stopped before extracting
        _verify(dest, size, sha256, url)
        return dest
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    complete = size is not None and start == size
    if not complete:
        headers = {"Range": f"bytes={start}-"} if start else {}
        try:
            response = urlopen(Request(url, headers=headers), timeout=timeout)
        except HTTPError as exc:
            if exc.code != 416:  # 416: nothing left to send, the part is already whole
                raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
        except (URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(
                f"cannot download {url} ({reason}); are you offline? Download it by hand and put it at {dest}"
            ) from None
        else:
            with response:
                if start and getattr(response, "status", 200) != 206:
                    start = 0  # server ignored the range: start over
                total = size or (start + int(response.headers.get("Content-Length") or 0)) or None
                with open(part, "ab" if start else "wb") as f, tqdm(
                    total=total, initial=start, unit="B", unit_scale=True, desc=dest.name, disable=not progress
                ) as bar:
                    while chunk := response.read(1 << 20):
                        f.write(chunk)
                        bar.update(len(chunk))
    _verify(part, size, sha256, url)
    os.replace(part, dest)
    return dest


def _verify(path: Path, size: int | None, sha256: str | None, url: str) -> None:
    actual = path.stat().st_size
    if size is not None and actual != size:
        if actual > size:
            path.unlink()
        raise DownloadError(f"{url}: got {actual} bytes, expected {size}; run again to resume")
    if sha256 is not None:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            path.unlink()
            raise DownloadError(f"{url}: SHA-256 mismatch, corrupt download removed; run again")
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
        if bad is not None:
            path.unlink()
            raise DownloadError(f"{url}: archive member {bad} is corrupt, download removed; run again")


def extract(archive: Path, root: Path, target: str) -> Path:
    """Extract ``archive`` into a temporary folder under ``root``, then rename ``target`` into place.

    A crash mid-extraction leaves no half-filled dataset folder behind.
    """
    dst = root / target
    with tempfile.TemporaryDirectory(dir=root, prefix=".extract-") as tmp:
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"{archive}: corrupt archive ({exc}); delete it and run again") from None
        src = Path(tmp) / target
        if not src.is_dir():
            raise DownloadError(f"{archive}: does not contain {target}/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    return dst


def download_div2k(root: str | os.PathLike, split: str = "train", scale: int | None = None, track: str = "bicubic", *, progress: bool = True) -> None:
    """Fetch, verify and extract the official HR archive of ``split`` and, with ``scale``, its LR archive.

    Folders already present are left alone; archives are deleted after extraction.
    """
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    wanted = [(f"DIV2K_{split}_HR.zip", hr_dir(root, split))]
    if scale is not None:
        wanted.append((f"DIV2K_{split}_LR_{track}_X{scale}.zip", lr_dir(root, split, track, scale)))
    for name, folder in wanted:
        if folder.is_dir() and any(folder.iterdir()):
            continue
        size, sha = ARCHIVES.get(name, (None, None))
        archive = fetch(BASE_URL + name, root / name, size, sha, progress=progress)
        extract(archive, root, folder.relative_to(root).as_posix())
        archive.unlink()


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
