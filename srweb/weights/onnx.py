"""ONNX export of weights: the network as trained, for onnxruntime, TensorRT, ONNX.js and the like.

The graph takes ``lr`` (N, C, H, W) float32 in [0, 1] with batch, height and width free, and gives
``sr``. What C holds and whether the input must be upscaled first depends on the architecture; the
model's metadata says it (``srweb.input``, ``srweb.upsampling``) so a runtime needs nothing else.
Each export is checked against PyTorch with onnxruntime on two input sizes before it is kept.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import torch

from srweb.errors import first_line
from srweb.imaging.fileio import atomic_write_bytes
from srweb.weights.files import WeightsCard, WeightsError, load_weights
from srweb.config import get_settings

TOLERANCE = 1e-4  # largest |ONNX - PyTorch| accepted on [0, 1] images
INPUTS = {
    "y": "Y of YCbCr as MATLAB's rgb2ycbcr / 255 ([16, 235] / 255 for 8-bit images), (N, 1, H, W) in [0, 1]; "
         "chroma is upscaled with bicubic",
    "rgb": "RGB, (N, 3, H, W) in [0, 1]",
}
UPSAMPLING = {
    "post": "the network upscales: sr is scale times the size of lr",
    "pre": "upscale lr by scale with bicubic first (MATLAB imresize); sr has the size of its input",
}


class ExportError(ValueError):
    """Weights that cannot be exported, or an export that does not match PyTorch."""


def metadata(card: WeightsCard) -> dict[str, str]:
    """The model properties a runtime needs to feed the graph, and where it comes from."""
    set5 = card.metric("Set5")
    props = {
        "srweb.name": card.name, "srweb.arch": card.arch, "srweb.scale": str(card.scale),
        "srweb.input": INPUTS.get(card.input_kind, card.input_kind),
        "srweb.upsampling": UPSAMPLING.get(card.upsampling, card.upsampling),
        "srweb.weights_sha256": card.sha256 or "",
    }
    if set5:
        props["srweb.set5"] = f"PSNR {set5['psnr']:.3f} dB, SSIM {set5['ssim']:.4f} (Y, shave {card.scale})"
    return props


def _check(model: torch.nn.Module, data: bytes, channels: int) -> float:
    """Largest |ONNX - PyTorch| over two inputs of other sizes than the one exported with."""
    import onnxruntime as ort  # heavy, and only the check after an export needs it

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    worst = 0.0
    generator = torch.Generator().manual_seed(0)
    for shape in ((1, channels, 37, 23), (2, channels, 16, 30)):
        x = torch.rand(shape, generator=generator)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"lr": x.numpy()})[0]
        if got.shape != expected.shape:
            raise ExportError(f"the ONNX graph gives {got.shape} for {tuple(shape)}, PyTorch {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def write_onnx(model: torch.nn.Module, card: WeightsCard, target: Path, *, opset: int | None = None) -> float:
    """Export ``model`` (loaded from ``card``) to ``target``; returns the largest difference from
    PyTorch it was checked to.

    Raises:
        ExportError: the graph does not export, or differs from PyTorch by more than :data:`TOLERANCE`.
    """
    import onnx  # heavy, and only an export needs it

    channels = 1 if card.input_kind == "y" else 3
    dims = {0: torch.export.Dim("batch", max=1024), 2: torch.export.Dim("height", min=4),
            3: torch.export.Dim("width", min=4)}
    try:
        # the exporter reports each step on stdout, and a failed opset conversion as a traceback on stderr
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            program = torch.onnx.export(model, (torch.rand(1, channels, 24, 20),), input_names=["lr"],
                                        output_names=["sr"], dynamic_shapes=(dims,), opset_version=opset,
                                        dynamo=True, external_data=False)
    except Exception as exc:  # torch.export's errors run to pages: the first line says what failed
        raise ExportError(f"{card.name}: cannot export to ONNX ({first_line(exc)})") from None
    proto = program.model_proto
    got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and got != opset:  # the exporter falls back to its own opset without failing
        raise ExportError(f"{card.name}: cannot export to ONNX opset {opset} (the exporter gives opset {got})")
    onnx.helper.set_model_props(proto, metadata(card))
    proto.doc_string = f"srweb {card.name}: {card.arch} x{card.scale}"
    data = proto.SerializeToString()
    difference = _check(model, data, channels)
    if difference > TOLERANCE:
        raise ExportError(f"{card.name}: the ONNX graph differs from PyTorch by {difference:.2g} (> {TOLERANCE:g})")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, data)
    return difference


def export_onnx(name: str, out: str | os.PathLike | None = None, *,
                opset: int | None = None) -> tuple[Path, float, WeightsCard]:
    """Export weights ``name`` (shipped, exported, a path or ``hf://``) to ``out`` (default
    ``NAME.onnx`` here; a folder gets ``NAME.onnx``); returns the file, the largest difference from
    PyTorch it was checked to, and the weights' card.

    Raises:
        WeightsError: unknown or broken weights.
        ExportError: see :func:`write_onnx`.
    """
    model, card = load_weights(name)
    target = Path(out) if out else Path(f"{card.name}.onnx")
    if target.is_dir():
        target = target / f"{card.name}.onnx"
    return target, write_onnx(model, card, target, opset=opset), card


def cached_export(name: str) -> Path:
    """The ONNX graph of weights ``name`` under ``cache_dir/onnx``, exported on first request; keyed
    by the tensors' sha256, so weights exported again under the same name are exported again."""
    model, card = load_weights(name)
    path = get_settings().cache_dir / "onnx" / (card.sha256 or "unhashed")[:16] / f"{card.name}.onnx"
    if not path.is_file():
        write_onnx(model, card, path)
    return path


__all__ = ["ExportError", "WeightsError", "cached_export", "export_onnx", "metadata", "write_onnx"]
