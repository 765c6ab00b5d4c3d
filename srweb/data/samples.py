"""Zero-download data: a sample HR set from images shipped with scikit-image, and name lookup."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from srweb.config import get_settings

# Natural photos among the files scikit-image installs (skimage/data), no fetch needed.
SAMPLE_FILES = ("astronaut.png", "chelsea.png", "coffee.png", "camera.png", "rocket.jpg", "ihc.png", "coins.png", "moon.png")


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


def benchmark_path(name: str | os.PathLike) -> Path:
    """Resolve a dataset name (``"Set5"``, ``"General-100"``, ``"sample"``, case-insensitive,
    looked up under ``settings.data_root``) or a folder path to an existing folder.

    Raises:
        ValueError: neither an existing folder nor a known name under the data root.
    """
    text = str(name)
    if text.lower() in ("sample", "samples"):
        return sample_images_dir()
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    root = get_settings().data_root
    if root.is_dir() and os.sep not in text:
        for child in root.iterdir():
            if child.is_dir() and child.name.lower() == text.lower():
                return child
    raise ValueError(f"dataset {text!r} not found: not a folder, and not a dataset under {root}")
