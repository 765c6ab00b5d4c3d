"""What the tabs share: the weights picker (choices, default, parsing, the cached Upscaler), the
image upload component, and run selection. Tabs import this module, never each other."""

from __future__ import annotations

import html
import re
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import gradio as gr
from PIL import Image

from srweb.config import get_settings
from srweb.imaging.io import ImageError, image_size
from srweb.inference.upscaler import Upscaler
from srweb.train import jobs
from srweb.weights.files import WeightsError, list_weights

BASELINE_SCALES = (2, 3, 4)
JPEG75 = "matlab-bicubic+jpeg75"  # the protocol of `srweb eval --degradation jpeg75`
_JPEG_MAGIC = b"\xff\xd8\xff"
_jpeg_uploads: OrderedDict[str, None] = OrderedDict()  # converted upload path -> it was a JPEG (last 256)


def _remember_jpeg(source: str | None, converted: object) -> None:
    """Gradio hands the tab a PNG copy of every upload (``format="png"``); remember which came as JPEG."""
    if isinstance(converted, str) and source and is_jpeg_file(source):
        _jpeg_uploads[converted] = None
        while len(_jpeg_uploads) > 256:
            _jpeg_uploads.popitem(last=False)


def is_jpeg_file(path: str | Path) -> bool:
    """The file starts as a JPEG does (whatever its name says)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(3) == _JPEG_MAGIC
    except OSError:
        return False


def is_jpeg_upload(path: str | None) -> bool:
    """The uploaded image (the tab's PNG copy or the file itself) was a JPEG."""
    return bool(path) and (path in _jpeg_uploads or is_jpeg_file(path))


class ImageInput(gr.Image):
    """``gr.Image`` whose unreadable uploads (corrupt file, not an image) raise ``gr.Error``.

    Gradio opens uploads with PIL before the handler runs; its own failure there is reported
    to the browser without a message (no toast), so the user would see only "Error" badges.
    """

    is_template = True  # render with gr.Image's frontend

    def preprocess(self, payload):
        name = getattr(payload, "orig_name", None) or "the upload"
        try:
            converted = super().preprocess(payload)
            _remember_jpeg(str(getattr(payload, "path", "") or ""), converted)
            return converted
        except Image.DecompressionBombError:  # PIL's own limit, far above ours: a forged header
            path = str(getattr(payload, "path", "") or "")
            try:
                image_size(path)  # srweb's wording of it, as the CLI and the batch report give
            except ImageError as exc:
                raise gr.Error(str(exc).replace(path, name, 1) if path else str(exc)) from None
            raise gr.Error(f"{name}: too large, its header declares a decompression bomb") from None
        except (OSError, ValueError, SyntaxError) as exc:  # what PIL raises for non-images
            path = getattr(payload, "path", None)
            if path and Path(path).is_file() and Path(path).stat().st_size == 0:
                raise gr.Error(f"{name}: empty file") from None
            raise gr.Error(f"{name} is not a readable image ({type(exc).__name__})") from None


def weights_choices() -> list[tuple[str, str]]:
    """Dropdown entries (label, value): shipped weights by architecture, then bicubic baselines. Each
    says what it is for: photos/JPEG (trained on degraded LR), the papers' clean-bicubic setting, or an
    imported community model (trained elsewhere, on data its card does not record)."""
    choices = []
    for card in list_weights():
        set5 = card.metric("Set5")
        score = f" · Set5 {set5['psnr']:.2f} dB" if set5 else ""
        if card.imported:
            purpose = " · imported community model"
        elif card.for_photos:
            jpeg = card.metric("Set5", JPEG75)
            purpose = " · for photos/JPEG" + (f" · JPEG-75 {jpeg['psnr']:.2f} dB" if jpeg else "")
        else:
            purpose = " · paper setting (clean LR)"
        choices.append((f"{card.arch} · x{card.scale} · {card.name}{purpose}{score}", card.name))
    choices += [(f"bicubic · x{s} (baseline)", f"bicubic-x{s}") for s in BASELINE_SCALES]
    return choices


def default_choice(choices: list[tuple[str, str]]) -> str | None:
    """The entry a list starts on: the first shipped weights (not a user's export, which may sort
    before them), else the first weights, else the first entry."""
    shipped = {card.name for card in list_weights(get_settings().weights_dir)}
    values = [v for _, v in choices]
    return next(
        (v for v in values if v in shipped),
        next((v for v in values if not v.startswith("bicubic")), values[0] if values else None),
    )


def parse_choice(value: str) -> tuple[str, int | None]:
    """``bicubic-x4`` -> ("bicubic", 4); a weights name -> (name, None).

    Only names of the weights folder and the baselines are accepted (never file paths), so
    weights exported after start-up work through the API and nothing else is reachable.
    """
    for base in ("bicubic", "nearest"):
        if value.startswith(f"{base}-x") and value[len(base) + 2 :].isdigit():
            return base, int(value[len(base) + 2 :])
    if value not in {card.name for card in list_weights()}:
        raise WeightsError(f"unknown weights {value!r}; choose one of the listed models")
    return value, None


@lru_cache(maxsize=8)
def get_upscaler(
    name: str, scale: int | None, self_ensemble: bool = False, output_scale: float | None = None
) -> Upscaler:
    """Cached Upscaler per weights entry, so a model loads once per process."""
    return Upscaler(name, scale, self_ensemble=self_ensemble, output_scale=output_scale)


def as_run_id(value: Any) -> int | None:
    """A run picker's value as an id: ``12``, ``"12"`` or ``"#12 ..."``; None when there is none."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*#?(\d+)\b.*", str(value))
    return int(match.group(1)) if match else None


def job_action(run: int | str | None, act: Callable[[int], Any]) -> tuple[int, Any] | None:
    """``(run id, act(run id))`` for the selected run; None, after a warning toast, when no run is
    selected or the job refuses (e.g. cancelling a finished run)."""
    run_id = as_run_id(run)
    if run_id is None:
        gr.Warning("Select a run first.")
        return None
    try:
        return run_id, act(run_id)
    except jobs.JobError as exc:
        gr.Warning(html.escape(str(exc)))
        return None
