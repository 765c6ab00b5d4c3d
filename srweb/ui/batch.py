"""Upscale tab, batch: many images through the picked model into one ZIP of PNGs, with a line per file."""

from __future__ import annotations

import zipfile

import gradio as gr
from PIL import Image

from srweb.config import get_settings
from srweb.inference.upscaler import upscale_files
from srweb.ui.outputs import output_dir
from srweb.ui.common import get_upscaler, parse_choice
from srweb.weights.files import WeightsError


def run_batch(
    files: list[str] | None,
    choice: str,
    self_ensemble: bool = False,
    output_scale: float | None = None,
    progress=gr.Progress(),
) -> tuple[str | None, str]:
    """Gradio handler (API name ``upscale_batch``): returns (ZIP of the PNGs, markdown report). A file
    that cannot be upscaled gets its reason in the report; the others are still done."""
    if not files:
        raise gr.Error("Upload some images first.")
    limit = get_settings().max_batch_files
    if len(files) > limit:
        raise gr.Error(f"{len(files)} images: a batch takes at most {limit}")
    try:
        name, scale = parse_choice(choice)
        upscaler = get_upscaler(name, scale, bool(self_ensemble), float(output_scale) if output_scale else None)
    except (WeightsError, ValueError) as exc:
        raise gr.Error(str(exc)) from None
    folder = output_dir()
    rows, done = [], []
    for i, outcome in enumerate(
        upscale_files(files, upscaler, folder / "sr", max_pixels=get_settings().max_input_pixels)
    ):
        progress((i + 1) / len(files), desc=f"image {i + 1}/{len(files)}")
        shown = outcome.source.name
        if outcome.error:  # name the upload as the user did, not by its server path
            rows.append(f"| {shown} | failed: {outcome.error.replace(str(outcome.source.parent) + '/', '')} |")
            continue
        with Image.open(outcome.target) as out:
            size = f"{out.width}x{out.height}"
        rows.append(f"| {shown} | {outcome.target.name}, {size}, {outcome.seconds:.2f} s |")
        done.append(outcome.target)
    factor = upscaler.output_scale or upscaler.scale
    summary = f"**{len(done)} of {len(files)} images upscaled** with {upscaler.name} (x{factor:g}, {upscaler.device}, {upscaler.backend} {upscaler.precision})"
    report = f"{summary}\n\n| file | result |\n|---|---|\n" + "\n".join(rows)
    if not done:
        return None, report
    archive = folder / f"{upscaler.name}-x{factor:g}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
        for path in done:
            zf.write(path, path.name)
    return str(archive), report


def build_batch(weights: gr.Dropdown, ensemble: gr.Checkbox, output_scale: gr.Number) -> None:
    """The batch box, inside the Upscale tab's current column: it uses the model, self-ensemble and
    output scale picked above it."""
    with gr.Accordion("Batch: many images into one ZIP (the model and options above)", open=False):
        files = gr.File(label="Images", file_count="multiple", file_types=["image"], elem_id="batch-files")
        button = gr.Button("Upscale all", elem_id="batch-button")
        archive = gr.File(label="Download the PNGs (ZIP)", elem_id="batch-download")
        report = gr.Markdown(elem_id="batch-report")
    button.click(
        run_batch,
        inputs=[files, weights, ensemble, output_scale],
        outputs=[archive, report],
        api_name="upscale_batch",
        concurrency_limit=1,
    )
