"""Compare tab: several models on the user's own HR image under the evaluation protocol (MATLAB
bicubic LR, Y-channel PSNR/SSIM with shave = scale), as a table and side-by-side crops."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from srweb.evaluation.compare import compare_methods, crops_figure
from srweb.config import get_settings
from srweb.imaging.io import ImageError, load_image, to_rgb8
from srweb.ui.outputs import image_file
from srweb.ui.common import BASELINE_SCALES, ImageInput, get_upscaler, parse_choice
from srweb.weights.files import WeightsError, list_weights

MAX_METHODS = 8
MAX_CROP = 256  # HR pixels; the figure is (methods + 1) crops of up to 4x that side
COLUMNS = ["method", "PSNR (Y)", "SSIM (Y)", "seconds"]


def method_choices(scale: int | None) -> list[tuple[str, str]]:
    """Weights of ``scale`` (of every scale when None), then the bicubic baseline(s); values as the
    Upscale tab's."""
    scales = BASELINE_SCALES if scale is None else (int(scale),)
    weights = [(c.name, c.name) for c in list_weights() if c.scale in scales]
    return weights + [(f"bicubic x{s}", f"bicubic-x{s}") for s in scales]


def on_scale_change(scale: int) -> gr.CheckboxGroup:
    choices = method_choices(scale)
    return gr.CheckboxGroup(choices=choices, value=[v for _, v in choices])


def run_compare(
    image_path: str | None,
    scale: int,
    methods: list[str] | None,
    crop_x: float | None,
    crop_y: float | None,
    crop_size: float,
    zoom: float,
    self_ensemble: bool = False,
    progress=gr.Progress(),
):
    """Gradio handler (API name ``compare``): returns (results table, crops figure file, report).
    ``self_ensemble`` adds each model's x8 self-ensemble (NAME+) beside it."""
    if not image_path:
        raise gr.Error("Upload an HR image first.")
    if not methods:
        raise gr.Error("Pick at least one method.")
    if len(methods) > MAX_METHODS:
        raise gr.Error(f"{len(methods)} methods: compare at most {MAX_METHODS} at once")
    scale, size, zoom = int(scale), int(crop_size or 0), int(zoom or 2)
    if not 8 <= size <= MAX_CROP:
        raise gr.Error(f"crop size must be 8 to {MAX_CROP} HR pixels, got {size}")
    try:
        hr = to_rgb8(load_image(image_path, max_pixels=get_settings().max_input_pixels))
        if min(hr.size) < max(size, 8 * scale):
            raise ImageError(f"{hr.width}x{hr.height} is too small for a {size}-pixel crop at x{scale}")
        width, height = hr.width - hr.width % scale, hr.height - hr.height % scale  # as mod-cropped
        x = int(crop_x) if crop_x is not None and crop_x >= 0 else (width - size) // 2
        y = int(crop_y) if crop_y is not None and crop_y >= 0 else (height - size) // 2
        for value in methods:
            if parse_choice(value)[1] not in (None, scale):
                raise WeightsError(f"{value} is not a x{scale} method")

        names = []
        for value in methods:
            names.append(value)
            if self_ensemble and parse_choice(value)[1] is None:  # weights; a baseline has no ensemble
                names.append(f"{value}+")

        def upscaler(value: str, s: int):
            progress(names.index(value) / len(names), desc=value)
            name, plus = value.removesuffix("+"), value.endswith("+")
            name, baseline_scale = parse_choice(name)
            up = get_upscaler(name, baseline_scale, plus)
            if up.scale != s:
                raise WeightsError(f"{value} is a x{up.scale} model, not x{s}")
            return up

        hr_array, results = compare_methods(np.asarray(hr), scale, names, upscaler)
        figure = crops_figure(hr_array, results, (x, y, size), zoom)
    except (ImageError, WeightsError, ValueError) as exc:
        raise gr.Error(str(exc).replace(str(Path(image_path).parent) + "/", "")) from None
    table = pd.DataFrame(
        [(r.name, round(r.psnr, 2), round(r.ssim, 4), round(r.seconds, 2)) for r in results], columns=COLUMNS
    ).sort_values("PSNR (Y)", ascending=False, ignore_index=True)
    h, w = hr_array.shape[:2]
    report = (
        f"**{Path(image_path).name}**: {w}x{h} HR (mod-cropped to x{scale}) → {w // scale}x{h // scale} LR "
        f"(MATLAB bicubic) → x{scale} by each method; PSNR/SSIM on Y with {scale} border pixels shaved. "
        f"Crop: {size}x{size} at ({x}, {y})."
    )
    return table, image_file(figure, "compare"), report


def build_tab() -> None:
    """Lay out the Compare tab inside the current Blocks context."""
    scale0 = 4
    with gr.Row():
        with gr.Column(scale=1):
            image = ImageInput(
                label="HR image (degraded here by MATLAB bicubic)",
                type="filepath",
                image_mode=None,
                format="png",
                height=260,
                elem_id="compare-image",
            )
            scale = gr.Radio(list(BASELINE_SCALES), value=scale0, label="Scale", elem_id="compare-scale")
            # Every scale's entries at first (API clients pick from these); a page shows its scale's.
            methods = gr.CheckboxGroup(
                choices=method_choices(None),
                value=[v for _, v in method_choices(scale0)],
                label="Methods",
                elem_id="compare-methods",
            )
            with gr.Row():
                crop_x = gr.Number(-1, label="Crop x, HR pixels (-1: centre)", precision=0, elem_id="compare-x")
                crop_y = gr.Number(-1, label="Crop y, HR pixels (-1: centre)", precision=0, elem_id="compare-y")
            with gr.Row():
                crop_size = gr.Number(96, label=f"Crop size (8-{MAX_CROP})", precision=0, elem_id="compare-size")
                zoom = gr.Slider(1, 4, value=2, step=1, label="Zoom", elem_id="compare-zoom")
            ensemble = gr.Checkbox(
                False, label="Also each model's x8 self-ensemble (NAME+; 8x the time)", elem_id="compare-ensemble"
            )
            button = gr.Button("Compare", variant="primary", elem_id="compare-button")
        with gr.Column(scale=2):
            report = gr.Markdown(elem_id="compare-report")
            table = gr.Dataframe(
                pd.DataFrame(columns=COLUMNS),
                label="Results (best PSNR first)",
                interactive=False,
                elem_id="compare-table",
            )
            figure = gr.Image(
                label="Crops: each method, then HR", type="filepath", format="png", elem_id="compare-figure"
            )
    gr.on([scale.change], on_scale_change, scale, methods, show_progress="hidden", api_visibility="private")
    gr.on(None, on_scale_change, scale, methods, show_progress="hidden", api_visibility="private")  # page load
    button.click(
        run_compare,
        [image, scale, methods, crop_x, crop_y, crop_size, zoom, ensemble],
        [table, figure, report],
        api_name="compare",
        concurrency_limit=1,
    )


def demo() -> gr.Blocks:
    with gr.Blocks(title="srweb · Compare") as blocks:
        build_tab()
    return blocks


if __name__ == "__main__":
    demo().launch()
