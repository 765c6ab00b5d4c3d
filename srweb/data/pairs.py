"""Random aligned LR/HR training patches with flips/rotations and FSRCNN-style scale augmentation.

Every image is decoded once. Small sets (General-100, the sample set) are held in memory
as uint8 arrays; large ones (DIV2K) are written once to an uncompressed ``.npy`` cache and
memory-mapped, so a patch costs a slice copy, never a PNG decode (the role BasicSR's
``extract_subimages`` plays, without losing crops that straddle sub-image borders).

Throughput, General-100, x2, 48x48 LR patches, RGB, batch 16, on a shared 2-core CPU
(``python -m srweb.data.pairs General-100 --scale 2 --patch 48 --workers N [--cache disk]``):
one-off setup (decode + MATLAB bicubic of 100 images) ~6 s; then ~7,000-14,000 samples/s
with num_workers=0, ~2,000 with 2 workers (shipping tiny batches between processes costs
more than making them), ~3,000-10,000 with the memory-mapped disk cache. Either way far above
what a CPU training step consumes.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from srweb.config import get_settings
from srweb.data.folders import HRFolderDataset, check_channels, make_lr, mod_crop, read_rgb8, skip_image, to_tensor
from srweb.imaging.fileio import atomic_write
from srweb.imaging.io import ImageError, image_size
from srweb.imaging.resize import imresize_np
from srweb.data.div2k import DIV2K, is_div2k_tree

FSRCNN_SCALES = (0.9, 0.8, 0.7, 0.6)
MEMORY_LIMIT = 2 << 30  # bytes of decoded arrays kept in RAM before switching to the disk cache


def _source_pairs(source: object, scale: int) -> list[tuple[Path, Path | None]]:
    pairs = getattr(source, "pairs", None)
    if pairs is not None:
        return list(pairs)
    root = Path(source).expanduser()  # type: ignore[arg-type]
    if is_div2k_tree(root):
        return DIV2K(root, scale, split="train").pairs
    return HRFolderDataset(root, scale).pairs


class PatchPairs(Dataset):
    """Random aligned training patches.

    Items are ``{"lr", "hr", "lr_path", "hr_path"}``: float32 ``(C, H, W)`` in [0, 1], RGB
    (C = 3) or MATLAB Y (C = 1). ``lr`` is ``patch_size`` square (``patch_size * scale`` with
    ``pre_upsample``), ``hr`` is ``patch_size * scale`` square and covers exactly the area of
    ``lr``. LR comes from the dataset's LR files when it has them (DIV2K) or from MATLAB
    bicubic of the whole mod-cropped HR (so patch borders see real neighbours, not mirrors).

    Args:
        source: HR folder, DIV2K root, or a dataset with a ``pairs`` attribute
            (:class:`~srweb.data.folders.HRFolderDataset`, :class:`~srweb.data.div2k.DIV2K`).
        scale: integer upscaling factor.
        patch_size: LR patch side.
        channels: ``"rgb"`` or ``"y"``.
        pre_upsample: give the bicubic-upsampled LR (HR size), for SRCNN/VDSR-style models.
        augment: random horizontal/vertical flips and 90 degree rotations.
        scales_aug: extra HR rescale factors, each image also used rescaled by them (MATLAB
            bicubic) before its LR is made by MATLAB bicubic (also for sets with LR files);
            ``FSRCNN_SCALES`` = (0.9, 0.8, 0.7, 0.6); 1.0 (the original) is always included once.
        repeat: passes over the images per epoch (``len = images * repeat``).
        cache: ``"memory"``, ``"disk"`` or ``"auto"`` (disk above ``MEMORY_LIMIT`` bytes, or with a
            teacher: its outputs take minutes to hours to compute, and a resumed run or the next
            stage with the same teacher reads them back).
        cache_dir: where the disk cache goes; default ``settings.cache_dir / "patches"``.
        teacher: for distillation, a function from an LR image (uint8 RGB) to its HR-sized
            super-resolution (uint8 RGB), run once per image and factor; items then also hold
            ``"teacher"``, the teacher's output over the area of ``hr``, cropped and augmented alike.
        teacher_id: names the teacher in the disk cache (e.g. its weights' sha256).
        degradation: a full degradation chain (:func:`srweb.data.degradations.resolve`); when
            non-empty, each item's LR is made from its HR patch by that chain, with a generator seeded
            from ``random`` (reseeded with the run, restored on resume: the same patches again).
        unlabelled: with a teacher, each image (and rescaled copy) is also an LR input as it
            is, at ``scale`` times the pixels of its own LR, with the teacher's output as both
            ``hr`` and ``teacher``: data no HR exists for, labelled by the teacher alone.

    Raises:
        ValueError: no image is at least ``patch_size`` in LR (smaller ones are skipped with a warning).
    """

    def __init__(
        self,
        source: object,
        scale: int,
        patch_size: int,
        channels: str = "rgb",
        pre_upsample: bool = False,
        augment: bool = True,
        scales_aug: tuple[float, ...] | None = None,
        repeat: int = 1,
        cache: str = "auto",
        cache_dir: str | os.PathLike | None = None,
        teacher: Callable[[np.ndarray], np.ndarray] | None = None,
        teacher_id: str = "teacher",
        unlabelled: bool = False,
        degradation: dict | None = None,
    ):
        if cache not in ("auto", "memory", "disk"):
            raise ValueError(f"cache must be auto, memory or disk, got {cache!r}")
        self.scale, self.patch_size = int(scale), int(patch_size)
        self.channels = check_channels(channels)
        self.pre_upsample, self.augment, self.repeat = pre_upsample, augment, max(1, int(repeat))
        if unlabelled and teacher is None:
            raise ValueError("unlabelled images need a teacher to label them")
        self.teacher, self.teacher_id, self.unlabelled = teacher, teacher_id, unlabelled
        if degradation and teacher is not None:
            raise ValueError("a teacher labels the classic LR; it cannot be combined with a degradation")
        self.degradation = degradation or {}
        self.factors = (1.0, *dict.fromkeys(f for f in scales_aug or () if f != 1.0))
        pairs = _source_pairs(source, self.scale)
        if cache == "auto":
            cache = "disk" if teacher is not None or self._estimate_bytes(pairs) > MEMORY_LIMIT else "memory"
        self.cache = cache
        self.cache_dir = Path(cache_dir) if cache_dir else get_settings().cache_dir / "patches"
        self.entries: list[dict] = []
        unusable = 0
        for hr_path, lr_path in pairs:
            try:
                for factor in self.factors:
                    for labelled in (True, False)[: 1 + unlabelled]:
                        entry = self._load(hr_path, lr_path, factor, labelled)
                        if entry is not None:
                            self.entries.append(entry)
            except ImageError as exc:  # corrupt, truncated, too large: this image is left out, the rest train
                skip_image(f"{exc}; skipped", stacklevel=2)
                self.entries = [e for e in self.entries if e["hr_path"] != str(hr_path)]
                unusable += 1
        if not self.entries:
            if unusable == len(pairs):
                raise ValueError(
                    f"no usable training image: all {unusable} image files failed to decode (corrupt or "
                    f"truncated; each is named in a line above)"
                )
            unreadable = f"; {unusable} more failed to decode" if unusable else ""
            raise ValueError(
                f"no training image is at least {self.patch_size}x{self.patch_size} pixels in LR at "
                f"x{self.scale}{unreadable}"
            )
        self._maps: dict[str, np.ndarray] = {}

    def _estimate_bytes(self, pairs: list[tuple[Path, Path | None]]) -> int:
        # Only asked without a teacher (whose outputs always go to disk): HR, LR, ILR.
        planes = 1 + 1 / self.scale**2 + self.pre_upsample
        per_pixel = 3 * planes * sum(f * f for f in self.factors)
        total = 0
        for hr_path, _ in pairs:
            try:
                width, height = image_size(hr_path)
            except ImageError:
                continue  # skipped, with its reason, when it is loaded
            total += width * height
        return int(total * per_pixel)

    def _load(self, hr_path: Path, lr_path: Path | None, factor: float, labelled: bool = True) -> dict | None:
        key = self._key(hr_path, lr_path, factor) + ("" if labelled else "-unlabelled")
        lr_name = str(lr_path if lr_path is not None and factor == 1.0 and labelled else hr_path)
        kinds = self._kinds(labelled)
        if self.cache == "disk" and all(self._cache_path(key, k).exists() for k in kinds):
            arrays = None
        else:
            arrays = self._decode(hr_path, lr_path, factor) if labelled else self._decode_unlabelled(hr_path, factor)
            if arrays is None:
                return None
        if self.cache == "memory":
            return {"hr_path": str(hr_path), "lr_path": lr_name, **arrays}
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        entry = {"hr_path": str(hr_path), "lr_path": lr_name}
        for kind in kinds:
            path = self._cache_path(key, kind)
            if arrays is not None and not path.exists():
                atomic_write(path, lambda tmp, a=arrays[kind]: _save_npy(tmp, a))
            entry[kind] = str(path)
        if not labelled:
            entry["hr"] = entry["teacher"]  # one file: the teacher's output is the only target
        if min(np.load(entry["lr"], mmap_mode="r").shape[:2]) < self.patch_size:
            self._warn_small(hr_path, factor)
            return None
        return entry

    def _kinds(self, labelled: bool = True) -> tuple[str, ...]:
        return ("hr",) * labelled + ("lr",) + ("ilr",) * self.pre_upsample + ("teacher",) * (self.teacher is not None)

    def _cache_path(self, key: str, kind: str) -> Path:
        suffix = f"-{self.teacher_id}" if kind == "teacher" else ""
        return self.cache_dir / f"{key}.{kind}{suffix}.npy"

    def _key(self, hr_path: Path, lr_path: Path | None, factor: float) -> str:
        stat = hr_path.stat()
        ident = f"{hr_path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}|{lr_path}|x{self.scale}|{factor}"
        return hashlib.sha1(ident.encode()).hexdigest()[:16]

    def _decode(self, hr_path: Path, lr_path: Path | None, factor: float) -> dict | None:
        hr = read_rgb8(hr_path)
        s = self.scale
        if lr_path is not None and factor == 1.0:
            lr = read_rgb8(lr_path)
            hr = hr[: lr.shape[0] * s, : lr.shape[1] * s]
            if hr.shape[:2] != (lr.shape[0] * s, lr.shape[1] * s):
                raise ImageError(f"{hr_path}: HR smaller than {s} x its LR {lr_path}")
        else:
            if factor != 1.0:
                hr = imresize_np(hr, factor)
            hr = mod_crop(hr, s)
            if min(hr.shape[:2]) < self.patch_size * s:
                self._warn_small(hr_path, factor)
                return None
            lr = make_lr(hr, s)
        if min(lr.shape[:2]) < self.patch_size:
            self._warn_small(hr_path, factor)
            return None
        arrays = {"hr": np.ascontiguousarray(hr), "lr": lr}
        if self.pre_upsample:
            # Upsample the whole LR once, like VDSR's data preparation, then crop.
            arrays["ilr"] = imresize_np(lr, s)
        if self.teacher is not None:
            arrays["teacher"] = self._teach(lr, hr.shape)
        return arrays

    def _decode_unlabelled(self, hr_path: Path, factor: float) -> dict | None:
        lr = read_rgb8(hr_path)
        if factor != 1.0:
            lr = imresize_np(lr, factor)
        if min(lr.shape[:2]) < self.patch_size:
            self._warn_small(hr_path, factor)
            return None
        s = self.scale
        target = self._teach(lr, (lr.shape[0] * s, lr.shape[1] * s, 3))
        arrays = {"lr": lr, "hr": target, "teacher": target}
        if self.pre_upsample:
            arrays["ilr"] = imresize_np(lr, s)
        return arrays

    def _teach(self, lr: np.ndarray, hr_shape: tuple[int, ...]) -> np.ndarray:
        out = np.asarray(self.teacher(lr))
        if out.shape != hr_shape or out.dtype != np.uint8:
            raise ValueError(f"the teacher returned {out.dtype} {out.shape}, expected uint8 {hr_shape}")
        return np.ascontiguousarray(out)

    def _warn_small(self, path: Path, factor: float) -> None:
        note = f" rescaled by {factor}" if factor != 1.0 else ""
        skip_image(f"{path}{note}: smaller than a {self.patch_size}px LR patch at x{self.scale}; skipped", stacklevel=3)

    def __getstate__(self) -> dict:
        # Memory maps are reopened in each DataLoader worker rather than pickled (copied).
        return {**self.__dict__, "_maps": {}}

    def _array(self, entry: dict, kind: str) -> np.ndarray:
        value = entry[kind]
        if isinstance(value, np.ndarray):
            return value
        if value not in self._maps:
            self._maps[value] = np.load(value, mmap_mode="r")
        return self._maps[value]

    def __len__(self) -> int:
        return len(self.entries) * self.repeat

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index % len(self.entries)]
        s, p = self.scale, self.patch_size
        lr_img = self._array(entry, "lr")
        # `random` is reseeded per DataLoader worker by torch (numpy's global RNG is not).
        y = random.randrange(lr_img.shape[0] - p + 1)
        x = random.randrange(lr_img.shape[1] - p + 1)
        hr_area = (slice(y * s, (y + p) * s), slice(x * s, (x + p) * s))
        if self.degradation:
            crops = self._degraded_crops(self._array(entry, "hr")[hr_area])
        else:
            crops = {
                "lr": self._array(entry, "ilr")[hr_area] if self.pre_upsample else lr_img[y : y + p, x : x + p],
                "hr": self._array(entry, "hr")[hr_area],
            }
        if self.teacher is not None:
            crops["teacher"] = self._array(entry, "teacher")[hr_area]
        if self.augment:
            crops = dict(zip(crops, augment_pair(*crops.values())))
        return {
            **{k: to_tensor(v, self.channels) for k, v in crops.items()},
            "lr_path": entry["lr_path"],
            "hr_path": entry["hr_path"],
        }

    def _degraded_crops(self, hr: np.ndarray) -> dict[str, np.ndarray]:
        from srweb.data.degradations import degrade  # OpenCV/scipy only for runs that degrade

        hr = np.ascontiguousarray(hr)
        lr = degrade(hr, self.scale, self.degradation, np.random.default_rng(random.getrandbits(64)))
        return {"lr": imresize_np(lr, self.scale) if self.pre_upsample else lr, "hr": hr}


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append ".npy" to a path
        np.save(fh, array)


def augment_pair(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The same random h-flip / v-flip / transpose (together: the 8 dihedral views) on all (lr, hr, ...)."""
    if random.random() < 0.5:
        arrays = tuple(a[:, ::-1] for a in arrays)
    if random.random() < 0.5:
        arrays = tuple(a[::-1] for a in arrays)
    if random.random() < 0.5:
        arrays = tuple(a.transpose(1, 0, 2) for a in arrays)
    return arrays


def _benchmark() -> None:  # pragma: no cover - measurement helper quoted in the module docstring
    import argparse  # the measurement script's own imports stay out of the library
    import time  # the measurement script's own imports stay out of the library

    from torch.utils.data import DataLoader  # the measurement script's own imports stay out of the library

    from srweb.data.samples import benchmark_path  # the measurement script's own imports stay out of the library

    parser = argparse.ArgumentParser(description="PatchPairs throughput")
    parser.add_argument("dataset")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--channels", default="rgb")
    parser.add_argument("--cache", default="auto")
    parser.add_argument("--pre-upsample", action="store_true")
    parser.add_argument("--batches", type=int, default=300)
    args = parser.parse_args()
    t0 = time.perf_counter()
    ds = PatchPairs(
        benchmark_path(args.dataset),
        args.scale,
        args.patch,
        channels=args.channels,
        pre_upsample=args.pre_upsample,
        repeat=1000,
        cache=args.cache,
    )
    print(f"setup {time.perf_counter() - t0:.1f}s, {len(ds.entries)} images, cache={ds.cache}")
    loader = DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    for _ in range(args.batches):
        next(it)
    dt = time.perf_counter() - t0
    print(f"{args.batches * args.batch / dt:,.0f} samples/s (num_workers={args.workers})")


if __name__ == "__main__":
    _benchmark()
