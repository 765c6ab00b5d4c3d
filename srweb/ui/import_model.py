"""Upscale tab, "Bring your own model": upload a community model file (or name one on the Hugging Face
Hub) and it joins the model list (:func:`srweb.weights.importer.import_model`). Admin only in public mode."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from srweb.ui.admin import admin_box, admin_only
from srweb.ui.common import weights_choices
from srweb.weights.importer import IMPORT_SUFFIXES, ModelImportError, import_model

ACTION = "importing a model"


def import_upload(
    file_path: str | None, hub_ref: str | None, name: str | None, source: str | None, licence: str | None
) -> tuple[str, gr.Dropdown]:
    """Gradio handler (API name ``import_model``): import the uploaded file, or ``hub_ref``; returns the
    report and the model list with the new entry picked."""
    hub_ref = (hub_ref or "").strip()
    if not file_path and not hub_ref:
        raise gr.Error("Upload a model file (.pth, .pt, .ckpt, .safetensors) or give hf://OWNER/REPO/FILE.")
    try:
        card = import_model(
            file_path or hub_ref,
            name=(name or "").strip() or None,
            source=(source or "").strip() or None,
            license=(licence or "").strip() or None,
        )
    except ModelImportError as exc:
        message = str(exc)
        if file_path:  # name the upload as the user did, not by its server path
            message = message.replace(str(Path(file_path).parent) + "/", "")
        raise gr.Error(message) from None
    cfg = card.config
    report = (
        f"Imported **{card.name}**: {card.arch} x{card.scale}, {card.num_params:,} parameters, "
        f"{cfg['in_channels']} channel{'s' if cfg['in_channels'] > 1 else ''} in, tile overlap "
        f"{cfg['receptive_radius']} px. It is now in the model list, the Compare tab, the Leaderboard "
        f"and the Rate pool."
    )
    if not (licence or "").strip():
        report += " No licence was given: you answer for the terms of these weights."
    return report, gr.Dropdown(choices=weights_choices(), value=card.name)


def build_import(weights: gr.Dropdown, admin: gr.Textbox | None = None) -> None:
    """The import section inside the current column; ``weights`` is the model list it updates."""
    with gr.Accordion(
        "Bring your own model: import a .pth / .safetensors (ESRGAN, Real-ESRGAN, SwinIR, HAT, SPAN, ...)",
        open=False,
        elem_id="import-model",
    ):
        gr.Markdown(
            "Any architecture spandrel's core detects. Pickles are read as tensors only (no code "
            "runs). You answer for the licence of what you import."
        )
        upload = gr.File(label="Model file", file_types=list(IMPORT_SUFFIXES), type="filepath", elem_id="import-file")
        hub_ref = gr.Textbox(
            label="or on the Hugging Face Hub: hf://OWNER/REPO/FILE", max_lines=1, elem_id="import-hub"
        )
        with gr.Row():
            name = gr.Textbox(label="Name (optional)", max_lines=1, elem_id="import-name")
            source = gr.Textbox(label="Source URL (optional)", max_lines=1, elem_id="import-source")
            licence = gr.Textbox(label="Licence (optional)", max_lines=1, elem_id="import-license")
        button = gr.Button("Import model", elem_id="import-button")
        report = gr.Markdown(elem_id="import-report")
    token = admin if admin is not None else admin_box()
    button.click(
        admin_only(import_upload, ACTION),
        [upload, hub_ref, name, source, licence, token],
        [report, weights],
        api_name="import_model",
        concurrency_limit=1,
    )
