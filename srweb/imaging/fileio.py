"""Atomic file writes: readers see the old file or the new one, never half of one.

Every writer of shared files (weights, cards, checkpoints, PNGs, caches) goes through
:func:`atomic_write`: it writes to a temporary file beside the target and renames it over the
target, removing the temporary file on failure (a SIGKILL can leave a ``.NAME.*.tmp`` behind,
which no reader ever opens).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, mode: int = 0o644) -> Path:
    """``write(temp_path)``, then rename the temporary file to ``path`` (with permissions ``mode``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)  # mkstemp makes 0600; these files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, synced to disk before the rename."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write(path, write)


def atomic_save_png(img, path: str | os.PathLike) -> Path:
    """Write ``img`` (a PIL image or an ``HxW[xC]`` uint8 array) as a PNG, atomically."""
    from PIL import Image  # PIL only for PNG saving: atomic writes of other files stay light

    image = img if isinstance(img, Image.Image) else Image.fromarray(img)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))
