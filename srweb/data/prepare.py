"""Turn any folder of HR images into the DIV2K layout (``srweb prepare SRC DST``).

So General-100, a phone photo folder or anything else trains exactly like DIV2K.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from tqdm.auto import tqdm

from srweb.data.div2k import hr_dir, lr_dir
from srweb.imaging.fileio import atomic_save_png
from srweb.data.folders import list_images, make_lr, mod_crop, read_rgb8, skip_image
from srweb.imaging.io import ImageError


def prepare_dataset(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    scales: tuple[int, ...] = (2, 3, 4),
    split: str = "train",
    start_index: int = 1,
    *,
    progress: bool = False,
) -> dict:
    """Write ``src``'s images as ``DST/DIV2K_{split}_HR/0001.png ...`` plus MATLAB-bicubic
    ``DST/DIV2K_{split}_LR_bicubic/X{s}/0001x{s}.png`` for every scale.

    HR is cropped (bottom/right) to a multiple of lcm(scales), 12 for x2/x3/x4, so all scales
    share one HR; images are converted to 8-bit RGB. Files that cannot be used (not an image,
    empty, truncated, too large, smaller than that multiple) are skipped with a line naming them
    and the reason (:func:`srweb.data.folders.skip_image`). ``DST/prepare_{split}.json`` maps new
    names to source files.

    Returns:
        Summary dict: ``dst``, ``split``, ``scales``, ``images`` (count written), ``skipped``
        (source names), ``mapping`` (new name -> source name).

    Raises:
        ValueError: missing or empty ``src``; no image could be prepared.
    """
    scales = tuple(int(s) for s in scales)
    if not scales or min(scales) < 1:
        raise ValueError(f"scales must be positive integers, got {scales}")
    multiple = math.lcm(*scales)
    dst = Path(dst).expanduser()
    refused: list[dict] = []
    files = list_images(src, skipped=refused)
    skipped = [r["image"] for r in refused]  # image files only: a readme beside them is no skipped image
    folders = {s: lr_dir(dst, split, "bicubic", s) for s in scales}  # made by the first image written
    shared = f" (the multiple x{'/x'.join(map(str, scales))} share)" if len(scales) > 1 else ""
    mapping: dict[str, str] = {}
    index = start_index
    for path in tqdm(files, desc="prepare", disable=not progress):
        try:
            rgb = read_rgb8(path)
            hr = mod_crop(rgb, multiple)
            if hr.size == 0:
                raise ImageError(f"{path}: {rgb.shape[1]}x{rgb.shape[0]}, smaller than {multiple}x{multiple}{shared}")
        except ImageError as exc:
            skip_image(f"{exc}; skipped")
            skipped.append(path.name)
            continue
        stem = f"{index:04d}"
        atomic_save_png(hr, hr_dir(dst, split) / f"{stem}.png")
        for s, folder in folders.items():
            atomic_save_png(make_lr(hr, s), folder / f"{stem}x{s}.png")
        mapping[f"{stem}.png"] = path.name
        index += 1
    if not mapping:
        raise ValueError(f"{src}: no image could be prepared (all {len(skipped)} skipped)")
    summary = {
        "dst": str(dst),
        "split": split,
        "scales": list(scales),
        "images": len(mapping),
        "skipped": sorted(n for n in skipped if not n.startswith(".")),
        "mapping": mapping,
    }
    (dst / f"prepare_{split}.json").write_text(json.dumps({**summary, "src": str(Path(src).resolve())}, indent=1))
    return summary
