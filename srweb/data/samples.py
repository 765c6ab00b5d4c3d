"""Zero-download data (a sample HR set from scikit-image's images, the built-in Set5) and dataset name lookup."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from srweb.config import get_settings

# Natural photos among the files scikit-image installs (skimage/data), no fetch needed.
SAMPLE_FILES = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "camera.png",
    "rocket.jpg",
    "ihc.png",
    "coins.png",
    "moon.png",
)


def _skimage_data_dir() -> Path:
    import skimage  # scikit-image is heavy; only the sample images come from it

    return Path(skimage.__file__).parent / "data"


def sample_images_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Materialise the built-in sample HR set as PNGs in ``cache_dir/samples`` and return it.

    Uses only the scikit-image files present on disk; the folder is built once, atomically.

    Raises:
        ValueError: none of the sample files is installed.
    """
    out = Path(cache_dir or get_settings().cache_dir) / "samples"
    if out.is_dir() and any(out.glob("*.png")):
        return out
    sources = [p for name in SAMPLE_FILES if (p := _skimage_data_dir() / name).is_file()]
    if not sources:
        raise ValueError(f"no sample images found in {_skimage_data_dir()}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".samples-"))
    try:
        for src in sources:
            dst = tmp / f"{src.stem}.png"
            if src.suffix == ".png":
                shutil.copyfile(src, dst)
            else:
                with Image.open(src) as img:
                    img.save(dst)
        os.replace(tmp, out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out.is_dir() and any(out.glob("*.png"))):  # lost a race to another process: fine
            raise
    return out


def default_training_data() -> str:
    """The training set used when none is named: ``General-100`` (the FSRCNN paper's set) when the
    data root holds it, else the built-in ``sample`` set, so training works on any machine."""
    try:
        benchmark_path("General-100")
    except ValueError:
        return "sample"
    return "General-100"


BUILTIN_ROOT = Path(__file__).resolve().parent / "builtin"


def builtin_datasets() -> dict[str, Path]:
    """Benchmarks shipped inside the package (``srweb/data/builtin/NAME``): Set5."""
    if not BUILTIN_ROOT.is_dir():
        return {}
    return {p.name: p for p in sorted(BUILTIN_ROOT.iterdir()) if p.is_dir() and not p.name.startswith((".", "_"))}


def locate_dataset(name: str, root: Path | None = None) -> Path | None:
    """The folder a dataset *name* (not a path) stands for, or None.

    Order: a folder of that name (case-insensitive) under ``root`` (default: ``settings.data_root``), then the copy
    shipped with the package (:func:`builtin_datasets`). A user's own folder wins because it is
    there only when they put it there (or fetched it); the built-in copy keeps ``Set5`` working
    on a fresh install.
    """
    root = root or get_settings().data_root
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child.is_dir() and child.name.lower() == name.lower():
                return child
    return next((path for builtin, path in builtin_datasets().items() if builtin.lower() == name.lower()), None)


def benchmark_path(name: str | os.PathLike) -> Path:
    """Resolve a dataset name or folder path to an existing folder; the one owner of that rule.

    ``"sample"`` is the built-in sample set (:func:`sample_images_dir`); an existing folder is
    itself; any other name (case-insensitive) is looked up by :func:`locate_dataset`: the data
    root first, then the benchmarks shipped with the package (``Set5``).

    Raises:
        ValueError: neither an existing folder nor a known name; for a downloadable set the
            message names ``srweb data fetch NAME``.
    """
    text = str(name)
    if text.lower() in ("sample", "samples"):
        return sample_images_dir()
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    found = locate_dataset(text) if os.sep not in text and text.strip() else None
    if found is not None:
        return found
    from srweb.data.catalog import find_entry  # the catalogue only matters for the hint

    entry = find_entry(text)
    hint = f"; download it with `srweb data fetch {entry.name}`" if entry else ""
    raise ValueError(
        f"dataset {text!r} not found: not a folder, and not a dataset under {get_settings().data_root}"
        f" nor built in{hint}"
    )
