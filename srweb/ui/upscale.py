"""Upscale tab: upload, pick weights, compare bicubic (or other weights) and SR on a slider, download the PNG."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from srweb.config import get_settings
from srweb.imaging.io import (
    ImageError,
    ImageTooLarge,
    encode_png,
    icc_profile_of,
    load_image,
    load_pixels,
    to_pil8,
    to_rgb8,
)
from srweb.inference.upscaler import MAX_OUTPUT_SCALE
from srweb.evaluation.metrics import psnr, ssim
from srweb.ui.batch import build_batch
from srweb.ui.common import (
    JPEG75,
    ImageInput,
    default_choice,
    get_upscaler,
    is_jpeg_upload,
    parse_choice,
    weights_choices,
)
from srweb.ui.import_model import build_import
from srweb.ui.outputs import image_file, output_dir
from srweb.weights.files import WeightsError, list_weights, weights_source
from srweb.weights.onnx import ExportError, cached_export
from srweb.weights.table import card_markdown

BICUBIC = "bicubic"  # the "compare with" default: bicubic at the model's scale


@dataclass
class UpscaleResult:
    sr: Image.Image
    reference: Image.Image  # the slider's left side: bicubic, or the weights compared with
    reference_name: str
    seconds: float
    device: str
    precision: str
    tiles: int
    sr_path: Path
    scale: int
    backend: str = "torch"  # what ran the network (srweb.inference.backends)
    compile_seconds: float = 0.0  # of ``seconds``: compiling the backend's graph (first call of an input size)


def about_weights(choice: str | None) -> str:
    """The picked entry's card as Markdown (see :func:`srweb.weights.table.card_markdown`); shipped
    weights get the command that trains them again."""
    card = next((c for c in list_weights() if c.name == choice), None)
    if card is None:
        return (
            "Nearest-neighbour: each pixel repeated."
            if str(choice).startswith("nearest")
            else "Bicubic interpolation (MATLAB `imresize`): the baseline every model is measured against."
        )
    shipped = weights_source(card.name) == "shipped"
    return card_markdown(card, f"weights/{card.name}.json" if shipped else None)


def onnx_graph(choice: str | None) -> str:
    """Gradio handler (API name ``onnx``): the picked weights as an ONNX file (exported once, then cached)."""
    try:
        name, scale = parse_choice(choice or "")  # listed weights only, never a path or hf://
        if scale is not None:
            raise ExportError(f"{choice} is an interpolation, not a network: there is nothing to export")
        cached = cached_export(name)
    except (WeightsError, ExportError) as exc:
        raise gr.Error(str(exc)) from None
    handed = output_dir() / cached.name  # Gradio serves nothing from the state folder (blocked_paths)
    shutil.copyfile(cached, handed)
    return str(handed)


def compare_choices(choice: str | None = None) -> list[tuple[str, str]]:
    """ "Compare with" entries: bicubic at the model's scale, then the weights entries of the scale of
    ``choice`` (a model-list value; every entry when it is None or unknown). ``choice`` itself stays:
    with the self-ensemble ticked, the slider compares a model against its own ensemble."""
    scales = {card.name: card.scale for card in list_weights()}
    scale = scales.get(choice) if choice in scales else _baseline_scale(choice)
    entries = [c for c in weights_choices() if c[1] in scales and scale in (None, scales[c[1]])]
    return [("bicubic (at the model's scale)", BICUBIC)] + entries


def photo_model_for(choice: str | None) -> str | None:
    """The photo/JPEG model to suggest instead of ``choice``: one of the same scale (else of any),
    the best on Set5 with JPEG-75 LR; None when no photo model is installed."""
    photos = [c for c in list_weights() if c.for_photos]
    scales = {c.name: c.scale for c in list_weights()}
    scale = scales.get(choice) if choice in scales else _baseline_scale(choice)
    same = [c for c in photos if c.scale == scale] or photos
    ranked = sorted(same, key=lambda c: -((c.metric("Set5", JPEG75) or {}).get("psnr") or 0.0))
    return ranked[0].name if ranked else None


def suggest_for_upload(image_path: str | None, choice: str | None) -> tuple[dict, dict]:
    """Gradio handler: on a JPEG upload, a note suggesting the photo model (and its button), else nothing."""
    hidden = gr.update(value="", visible=False), gr.update(visible=False)
    if not is_jpeg_upload(image_path):
        return hidden
    suggestion = photo_model_for(choice)
    if suggestion is None:
        return hidden
    if suggestion == choice or any(c.name == choice and c.for_photos for c in list_weights()):
        return gr.update(value="JPEG upload: the picked model is made for JPEG photos.", visible=True), gr.update(
            visible=False
        )
    return (
        gr.update(
            value=f"This is a JPEG: its compression artefacts get magnified by models trained on clean "
            f"images. **{suggestion}** is trained for JPEG photos.",
            visible=True,
        ),
        gr.update(visible=True),
    )


def _baseline_scale(choice: str | None) -> int | None:
    """``bicubic-x4`` -> 4; anything else -> None."""
    try:
        return parse_choice(choice)[1] if choice else None
    except WeightsError:
        return None


def refresh_compare(choice: str | None, current: str | None) -> gr.Dropdown:
    """The "Compare with" list for the model just picked; keeps the current pick when it still fits."""
    choices = compare_choices(choice)
    return gr.Dropdown(choices=choices, value=current if current in {v for _, v in choices} else BICUBIC)


def upscale_image(
    image: Image.Image | np.ndarray,
    choice: str,
    progress=None,
    self_ensemble: bool = False,
    compare_with: str = BICUBIC,
    icc_profile: bytes | None = None,
    output_scale: float | None = None,
) -> UpscaleResult:
    """Run SR and the slider's other side (``compare_with``: bicubic, or weights of the same scale) on
    ``image`` (a PIL image, or a 16-bit colour array from :func:`load_pixels`, whose colour profile
    ``icc_profile`` is), both resized to ``output_scale`` when given (0 or None: the model's scale);
    write the SR PNG, at the input's bit depth, to a temp file."""
    name, scale = parse_choice(choice)
    output_scale = float(output_scale) if output_scale else None
    upscaler = get_upscaler(name, scale, bool(self_ensemble), output_scale)
    if compare_with in (None, "", BICUBIC):
        other = get_upscaler(BICUBIC, upscaler.scale, False, output_scale)
    else:
        other = get_upscaler(*parse_choice(compare_with), False, output_scale)
        if other.scale != upscaler.scale:
            raise ValueError(
                f"{other.name} is a x{other.scale} model and {upscaler.name} x{upscaler.scale}: "
                f"compare entries of one scale"
            )
    tiles_seen = [1]

    def report(done: int, total: int) -> None:
        tiles_seen[0] = total
        if progress is not None:
            progress(done / total, desc=f"{'pass' if upscaler.self_ensemble else 'tile'} {done}/{total}")

    start = time.perf_counter()  # not upscaler.last_seconds: a concurrent request may share the upscaler
    sr = upscaler.upscale(image, progress=report)
    seconds = time.perf_counter() - start
    compile_seconds = upscaler.last_compile_seconds
    reference = other.upscale(image)
    sr_path = output_dir() / f"{upscaler.name}.png"
    sr_path.write_bytes(encode_png(sr, icc_profile))
    return UpscaleResult(
        to_pil8(sr),
        to_pil8(reference),
        other.name,
        seconds,
        upscaler.device,
        upscaler.precision,
        tiles_seen[0] // (8 if upscaler.self_ensemble else 1),
        sr_path,
        upscaler.scale,
        upscaler.backend,
        compile_seconds,
    )


def compile_note(result: UpscaleResult) -> str:
    """The first call's compile time, apart from the run itself (later calls of this size reuse it)."""
    if result.compile_seconds <= 0:
        return ""
    return (
        f"; first call for this size: {result.compile_seconds:.2f} s compiling the {result.backend} graph, "
        f"{result.seconds - result.compile_seconds:.2f} s running"
    )


def compare_with_reference(result: UpscaleResult, reference: Image.Image) -> str:
    """PSNR/SSIM (Y channel, border = scale) of SR and the compared image against an HR reference."""
    ref = to_rgb8(reference)
    if ref.size != result.sr.size:
        raise ImageError(f"reference is {ref.width}x{ref.height}, the output is {result.sr.width}x{result.sr.height}")
    border = result.scale  # the classic protocol shaves as many pixels as the scale
    rows = []
    for label, img in (("SR", result.sr), (result.reference_name, result.reference)):
        img = to_rgb8(img)
        rows.append(
            f"| {label} | {psnr(img, ref, crop_border=border, y_channel=True):.2f} dB | "
            f"{ssim(img, ref, crop_border=border, y_channel=True):.4f} |"
        )
    return "| | PSNR (Y) | SSIM (Y) |\n|---|---|---|\n" + "\n".join(rows)


def _slider_view(img: Image.Image) -> Image.Image:
    return img if img.mode in {"RGB", "RGBA", "L"} else to_rgb8(img)


def _slider_files(result: UpscaleResult) -> tuple[str, str]:
    """The slider's two images as files beside the SR PNG (files, not PIL images: see
    :mod:`srweb.ui.outputs`); the SR PNG itself when it displays as is."""
    folder = result.sr_path.parent
    sr = (
        str(result.sr_path)
        if result.sr.mode in {"RGB", "RGBA", "L"}
        else image_file(_slider_view(result.sr), "sr-view", folder)
    )
    # "-view": the SR file of the bicubic baseline is bicubic.png, which the download must keep
    return image_file(_slider_view(result.reference), f"{result.reference_name}-view", folder), sr


def run_upscale(
    image_path: str | None,
    choice: str,
    reference_path: str | None = None,
    self_ensemble: bool = False,
    compare_with: str = BICUBIC,
    output_scale: float | None = None,
    progress=gr.Progress(),
):
    """Gradio handler (API name ``upscale``): returns (SR PNG file, slider pair, report markdown)."""
    if not image_path:
        raise gr.Error("Upload an image first.")
    if not choice:
        raise gr.Error("Pick a model.")
    limit = get_settings().max_input_pixels
    try:
        pixels = load_pixels(image_path, max_pixels=limit)
        image = to_pil8(pixels)
        mode = image.mode if pixels is image else f"{image.mode} 16-bit"
        profile = None if pixels is image else icc_profile_of(image_path)
        result = upscale_image(pixels, choice, progress, self_ensemble, compare_with, profile, output_scale)
        resized = bool(output_scale) and float(output_scale) != result.scale
        report = (
            f"**{image.width}x{image.height} {mode} → {result.sr.width}x{result.sr.height}** "
            f"in {result.seconds:.2f} s on {result.device} ({result.backend} {result.precision}"
            f"{', x8 self-ensemble' if self_ensemble else ''}"
            f"{f', x{result.scale} resized to x{float(output_scale):g}' if resized else ''}"
            f"{f', {result.tiles} tiles' if result.tiles > 1 else ''})"
            f"{compile_note(result)}  \n"
            f"Slider: {result.reference_name} ◀ ▶ {result.sr_path.stem}"
        )
        if reference_path:
            try:  # never decoded when larger than the output (memory): it could not match anyway
                reference = load_image(reference_path, max_pixels=result.sr.width * result.sr.height)
            except ImageTooLarge as exc:
                raise ImageTooLarge(
                    f"{exc}; the HR reference must be the size of the output, {result.sr.width}x{result.sr.height}"
                ) from None
            report += "\n\n" + compare_with_reference(result, reference)
    except (ImageError, WeightsError, ValueError) as exc:
        message = str(exc)
        for path in (image_path, reference_path):  # name uploads as the user did, not by server path
            if path:
                message = message.replace(str(Path(path).parent) + "/", "")
        raise gr.Error(message) from None
    return str(result.sr_path), _slider_files(result), report


def example_images() -> list[str]:
    """Example inputs that ship inside an installed package (scikit-image), no download."""
    import skimage  # scikit-image is heavy; only the example images come from it

    data = Path(skimage.__file__).parent / "data"
    names = ("chelsea.png", "coffee.png", "astronaut.png", "camera.png")
    return [str(data / n) for n in names if (data / n).exists()]


def _output_column() -> tuple[gr.ImageSlider, gr.Markdown, gr.File]:
    """The slider (compared ◀ ▶ SR), the report and the PNG download."""
    with gr.Column(scale=2):
        slider = gr.ImageSlider(
            label="Compared (bicubic unless chosen) ◀ ▶ SR",
            format="png",
            type="pil",
            image_mode=None,
            max_height=640,
            elem_id="sr-slider",
        )
        report = gr.Markdown(elem_id="upscale-report")
        download = gr.File(label="Download SR (PNG)", elem_id="sr-download")
    return slider, report, download


def _wire_model_picks(weights, compare, about, onnx_file, image, photo_widgets) -> None:
    """What a pick of weights (or an upload) updates: comparable entries, the card, the photo hint."""
    photo_hint, use_photo = photo_widgets
    # Offers only entries of the picked model's scale, read afresh on each pick (so weights
    # exported since start-up appear too).
    gr.on(
        [weights.change], refresh_compare, [weights, compare], compare, show_progress="hidden", api_visibility="private"
    )
    weights.change(
        lambda choice: (about_weights(choice), None),
        weights,
        [about, onnx_file],
        show_progress="hidden",
        api_visibility="private",
    )
    gr.on(
        [image.change, weights.change],
        suggest_for_upload,
        [image, weights],
        [photo_hint, use_photo],
        show_progress="hidden",
        api_visibility="private",
    )
    use_photo.click(
        lambda choice: photo_model_for(choice) or choice,
        weights,
        weights,
        show_progress="hidden",
        api_visibility="private",
    )


def build_tab(admin: gr.Textbox | None = None) -> gr.Dropdown:
    """Lay out the Upscale tab inside the current Blocks context; returns the model dropdown
    (other tabs refresh its choices when they add weights). ``admin`` is the page's admin token box."""
    choices = weights_choices()
    default = default_choice(choices)
    with gr.Row():
        with gr.Column(scale=1):
            image = ImageInput(label="Input image", type="filepath", image_mode=None, format="png", height=320)
            weights = gr.Dropdown(choices=choices, value=default, label="Model (weights)", allow_custom_value=True)
            photo_hint = gr.Markdown(visible=False, elem_id="photo-hint")
            use_photo = gr.Button("Use the photo model", size="sm", visible=False, elem_id="use-photo-model")
            with gr.Accordion("About this model: scores, speed, how it was trained", open=False):
                about = gr.Markdown(about_weights(default), elem_id="model-about")
                onnx_button = gr.Button("Export as ONNX (checked with onnxruntime)", size="sm", elem_id="onnx-button")
                onnx_file = gr.File(label="ONNX graph: its metadata says how to feed it", elem_id="onnx-file")
            compare = gr.Dropdown(
                choices=compare_choices(default),
                value=BICUBIC,
                label="Compare with (slider left side)",
                allow_custom_value=True,  # API callers name any entry; run_upscale checks it
                elem_id="compare-with",
            )
            ensemble = gr.Checkbox(
                False,
                label="Self-ensemble: average 8 flips and rotations (8x the time, "
                "+0.04 to +0.18 dB on Set5 for the shipped models)",
                elem_id="self-ensemble",
            )
            output_scale = gr.Number(
                0,
                label="Output scale (0: the model's; e.g. 3.5 or 8: SR, then bicubic to that size)",
                minimum=0,
                maximum=MAX_OUTPUT_SCALE,
                elem_id="output-scale",
            )
            with gr.Accordion("HR reference (optional): PSNR/SSIM of both", open=False):
                reference = ImageInput(label="HR reference", type="filepath", image_mode=None, format="png")
            button = gr.Button("Upscale", variant="primary")
            examples = example_images()
            if examples:
                gr.Examples(examples=[[p] for p in examples], inputs=[image], label="Examples")
            build_batch(weights, ensemble, output_scale)
            build_import(weights, admin)
        slider, report, download = _output_column()
    button.click(
        run_upscale,
        inputs=[image, weights, reference, ensemble, compare, output_scale],
        outputs=[download, slider, report],
        api_name="upscale",
        concurrency_limit=2,
    )
    onnx_button.click(onnx_graph, weights, onnx_file, api_name="onnx", concurrency_limit=1)
    _wire_model_picks(weights, compare, about, onnx_file, image, (photo_hint, use_photo))
    return weights


def demo() -> gr.Blocks:
    with gr.Blocks(title="srweb · Upscale") as blocks:
        build_tab()
    return blocks


if __name__ == "__main__":
    demo().launch()
