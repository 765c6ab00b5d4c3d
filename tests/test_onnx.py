"""ONNX export (``srweb onnx``): the graph, fed as its metadata says, gives what srweb's own upscaler
gives, at any batch and size; failures are one clear line and write nothing."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import srweb.weights.onnx as onnx_export
from srweb.cli import main
from srweb.data.folders import read_rgb8
from srweb.imaging.io import rgb_to_ycbcr
from srweb.inference.upscaler import Upscaler
from srweb.imaging.resize import imresize

from conftest import set5_present


def an_image(height: int = 45, width: int = 57) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1]: a corner of Set5's butterfly when the data is there, else a smooth pattern."""
    if set5_present():
        from srweb.data.samples import benchmark_path

        rgb = read_rgb8(sorted(benchmark_path("Set5").glob("*.png"))[0])[:height, :width]
        return torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)
    yy, xx = torch.meshgrid(torch.linspace(0, 6, height), torch.linspace(0, 6, width), indexing="ij")
    return torch.stack([torch.sin(xx) * 0.4 + 0.5, torch.cos(yy) * 0.4 + 0.5, torch.sin(xx + yy) * 0.3 + 0.5])


def feed(path, rgb: torch.Tensor) -> torch.Tensor:
    """Run the exported graph on ``rgb`` exactly as its metadata says; the result in the graph's space."""
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    scale = int(props["srweb.scale"])
    x = rgb_to_ycbcr(rgb[None])[:, :1] if props["srweb.input"].startswith("Y of YCbCr") else rgb[None]
    if props["srweb.upsampling"].startswith("upscale lr by scale with bicubic first"):
        x = imresize(x, scale=scale).clamp(0, 1)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["sr"], {"lr": x.numpy()})[0]).clamp(0, 1)


@pytest.mark.parametrize("name", ["espcn-x3.general100", "srcnn-x2.general100", "edsr-baseline-x2.general100"])
def test_the_exported_graph_upscales_as_srweb_does(name, tmp_path, capsys):
    """Y with post-upsampling, Y with bicubic pre-upsampling, and RGB: three ways to feed a graph."""
    out = tmp_path / "models" / "sr.onnx"
    assert main(["onnx", name, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "onnxruntime matches PyTorch" in printed and f"name: {name}" in printed

    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    props = {p.key: p.value for p in model.metadata_props}
    upscaler = Upscaler(name, precision="fp32", tile_size=0)
    assert props["srweb.name"] == name and props["srweb.scale"] == str(upscaler.scale)
    assert props["srweb.weights_sha256"] == upscaler.card.sha256 and "PSNR" in props["srweb.set5"]

    rgb = an_image()
    sr = feed(out, rgb)
    # srweb's model-space forward of the same planes (Y or RGB; it pre-upsamples itself when the model does)
    planes = rgb_to_ycbcr(rgb[None])[:, :1] if upscaler.model.input_kind == "y" else rgb[None]
    expected = upscaler.forward_tensor(planes).clamp(0, 1)
    assert sr.shape == expected.shape == (1, sr.shape[1], 45 * upscaler.scale, 57 * upscaler.scale)
    assert float((sr - expected).abs().max()) < 1e-4


def test_batch_and_size_are_free(tmp_path):
    path, difference, _ = onnx_export.export_onnx("espcn-x2.general100", tmp_path / "e.onnx")
    assert difference < onnx_export.TOLERANCE
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 1, 4, 4), (3, 1, 31, 200), (1, 1, 256, 17)]:
        (sr,) = session.run(None, {"lr": np.random.default_rng(0).random(shape, dtype=np.float32)})
        assert sr.shape == (shape[0], 1, shape[2] * 2, shape[3] * 2)


def test_unknown_weights_and_baselines_are_one_line(tmp_path, capsys):
    for name in ["no-such-weights", "bicubic-x2"]:
        assert main(["onnx", name, "-o", str(tmp_path / "x.onnx")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("srweb: error:") and "not found" in err and "\n" not in err
    assert not (tmp_path / "x.onnx").exists()


def test_an_export_that_does_not_match_pytorch_is_not_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)  # any difference, even 0, is too much
    assert main(["onnx", "espcn-x2.general100", "-o", str(tmp_path / "e.onnx")]) == 2
    assert "differs from PyTorch" in capsys.readouterr().err
    assert not (tmp_path / "e.onnx").exists()


def test_a_graph_torch_cannot_export_is_one_line(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise RuntimeError("Failed to export the model with torch.export.\npages of detail")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    assert main(["onnx", "espcn-x2.general100", "-o", str(tmp_path / "e.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot export to ONNX (Failed to export the model with torch.export.)" in err and "pages" not in err
    assert not (tmp_path / "e.onnx").exists()


def test_the_app_exports_once_per_tensors_then_serves_the_cached_file(tmp_path, monkeypatch):
    from srweb.config import get_settings
    from srweb.ui.upscale import onnx_graph

    monkeypatch.setenv("SRWEB_CACHE_DIR", str(tmp_path / "cache"))
    get_settings.cache_clear()
    try:
        first = onnx_graph("espcn-x2.general100")
        (cached,) = (tmp_path / "cache" / "onnx").glob("*/espcn-x2.general100.onnx")
        monkeypatch.setattr(onnx_export, "write_onnx", lambda *a, **k: pytest.fail("exported twice"))
        second = onnx_graph("espcn-x2.general100")
        assert second != first and open(second, "rb").read() == open(first, "rb").read() == cached.read_bytes()
    finally:
        get_settings.cache_clear()


def test_a_folder_as_out_gets_name_onnx_and_an_opset_the_exporter_cannot_give_is_refused(tmp_path, capsys):
    assert main(["onnx", "espcn-x2.general100", "-o", str(tmp_path)]) == 0
    assert (tmp_path / "espcn-x2.general100.onnx").is_file()
    assert main(["onnx", "espcn-x2.general100", "-o", str(tmp_path / "old.onnx"), "--opset", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("srweb: error:") and "cannot export to ONNX opset 3" in err and "\n" not in err
    assert not (tmp_path / "old.onnx").exists()
