"""Files the app hands to Gradio: written whole, in one temp folder that does not grow forever.

Handlers return image *files*, not PIL images. Gradio writes a returned PIL image to its cache
under a name derived from the content, in place; two requests with the same output (the same
example, the same rating crop) then rewrite a file while it is being downloaded and the client
gets a truncated response ("Too little data for declared Content-Length"). A returned file is
copied into the cache with a rename instead, which is safe. Request folders here, and Gradio's
cache (``delete_cache``), are removed after :data:`OUTPUT_TTL_S`.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from srweb.imaging.io import png_ready

OUTPUT_TTL_S = 3600
_ROOT_NAME = "srweb-outputs"


def output_dir() -> Path:
    """A new folder for one request's files; folders older than :data:`OUTPUT_TTL_S` go first
    (Gradio copied their files into its cache long before)."""
    root = Path(tempfile.gettempdir()) / _ROOT_NAME
    root.mkdir(exist_ok=True)
    cutoff = time.time() - OUTPUT_TTL_S
    for old in root.iterdir():
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:  # another request removed it first
            pass
    return Path(tempfile.mkdtemp(dir=root))


def image_file(img: Image.Image, name: str, folder: Path | None = None, *, unique: bool = False) -> str:
    """Save ``img`` as ``folder/name.png`` (a fresh :func:`output_dir` by default); returns the path.

    ``unique`` adds a random text chunk, so equal images get different bytes (and Gradio URLs).
    """
    path = (folder or output_dir()) / f"{name}.png"
    info = None
    if unique:
        info = PngInfo()
        info.add_text("nonce", secrets.token_hex(8))
    png_ready(img).save(path, pnginfo=info)
    return str(path)


def cache_policy() -> tuple[int, int]:
    """``Blocks.delete_cache``: every hour, drop Gradio cache files older than :data:`OUTPUT_TTL_S`
    (examples and default values are kept by Gradio)."""
    return OUTPUT_TTL_S, OUTPUT_TTL_S
