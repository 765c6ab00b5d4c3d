"""Inference backends (issue 33): OpenVINO and onnxruntime beside torch, chosen by measurement.

Each backend gives torch fp32's output on crops of every shipped entry; a missing runtime falls back
to torch with one warning line; the compiled-model cache is reused and evicted when weights change;
the winner recorded in a card is followed on its processor only. Speeds are never asserted.
"""

from __future__ import annotations

import shutil
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from srweb.inference import backends
from srweb.inference.backends import BackendChoice, BackendFallback, candidates, choose_backend, recorded_best
from srweb.inference.upscaler import Upscaler, cpu_supports_bf16, device_name, tile_windows
from srweb.weights.files import list_weights, read_card, save_weights, write_card

SHIPPED = list_weights()
GRAPH_CHOICES = [c for c in candidates("cpu", cpu_supports_bf16()) if c.name != "torch"]
HERE = device_name("cpu")
SHIPPED_RGB = next(c.name for c in SHIPPED if c.arch == "edsr-baseline")


@pytest.fixture(scope="module")
def graph_cache(tmp_path_factory):
    """One ONNX cache for the module (each entry is exported once), never the checkout's."""
    from srweb.config import get_settings

    mp = pytest.MonkeyPatch()
    mp.setenv("SRWEB_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    mp.delenv("SRWEB_BACKEND", raising=False)
    get_settings.cache_clear()
    yield
    mp.undo()
    get_settings.cache_clear()
    backends.clear_cache()


@pytest.fixture
def own_weights(tmp_path, monkeypatch, graph_cache):
    """A weights folder of our own holding a copy of the smallest shipped entry; returns (name, folder)."""
    from srweb.config import get_settings

    card = min(SHIPPED, key=lambda c: c.num_params)
    for suffix in (".safetensors", ".json"):
        shutil.copy2(f"weights/{card.name}{suffix}", tmp_path / f"{card.name}{suffix}")
    monkeypatch.setenv("SRWEB_WEIGHTS_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield card.name, tmp_path
    get_settings.cache_clear()


def crop(width: int = 40, height: int = 32) -> Image.Image:
    """A smooth RGB pattern with edges (no data folder needed)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([np.sin(xx / 3) * 0.4 + 0.5, np.cos(yy / 4) * 0.4 + 0.5, ((xx + yy) % 16 > 8) * 0.6 + 0.2], -1)
    return Image.fromarray(np.round(rgb * 255).astype(np.uint8))


def as_float(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64) / 255


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(1 / max(float(np.mean((a - b) ** 2)), 1e-12))


@pytest.mark.skipif(not GRAPH_CHOICES, reason="no graph backend on this host")
@pytest.mark.parametrize("card", SHIPPED, ids=lambda c: c.name)
def test_each_backend_matches_torch_fp32_on_a_crop(card, graph_cache):
    image = crop()
    exact = as_float(Upscaler(card.name, precision="fp32", backend="torch").upscale(image))
    for choice in GRAPH_CHOICES:
        with warnings.catch_warnings():
            warnings.simplefilter("error", BackendFallback)  # an installed runtime must run, not fall back
            up = Upscaler(card.name, precision=choice.precision, backend=choice.name)
        assert (up.backend, up.precision) == (choice.name, choice.precision)
        got = as_float(up.upscale(image))
        assert got.shape == exact.shape
        if choice.precision == "fp32":  # the same arithmetic: 8-bit values equal within one level
            assert np.abs(got - exact).max() <= 1 / 255 + 1e-9, choice.label
        else:  # bf16: the Set5 guard is the bench's; on a crop, far above visible differences
            assert psnr(got, exact) > 40, choice.label


def test_fixed_windows_have_one_shape_and_cover_the_image():
    h, w, pad = 101, 77, 9
    for th, tw in ((101, 77), (51, 26), (26, 39), (15, 16)):
        windows = tile_windows(h, w, th, tw, pad, fixed=True)
        shapes = {(py1 - py0, px1 - px0) for _, _, py0, py1, _, _, px0, px1 in windows}
        assert len(shapes) == 1  # one compiled model serves every tile
        covered = np.zeros((h, w), int)
        for y0, y1, py0, py1, x0, x1, px0, px1 in windows:
            assert 0 <= py0 <= y0 and y1 <= py1 <= h and 0 <= px0 <= x0 and x1 <= px1 <= w
            # at least `pad` pixels of context, except at the image's own edge
            assert py0 == 0 or y0 - py0 >= pad
            assert py1 == h or py1 - y1 >= pad
            assert px0 == 0 or x0 - px0 >= pad
            assert px1 == w or px1 - x1 >= pad
            covered[y0:y1, x0:x1] += 1
        assert (covered == 1).all()


@pytest.mark.skipif(not any(c.name == "openvino" for c in GRAPH_CHOICES), reason="OpenVINO is not installed")
@pytest.mark.parametrize("name", ["fsrcnn-x3.general100", "srcnn-x2.general100"])
def test_openvino_tiles_are_seamless(name, graph_cache):
    """Tiled on OpenVINO (one compiled shape, edge tiles shifted inward) equals untiled torch fp32."""
    x = torch.from_numpy(as_float(crop(70, 53)).transpose(2, 0, 1).astype(np.float32))
    x = x.mean(0, keepdim=True)[None]  # both are luma models: (1, 1, H, W)
    exact = Upscaler(name, precision="fp32", backend="torch", tile_size=10_000).forward_tensor(x)
    backends.clear_cache()
    tiled = Upscaler(name, precision="fp32", backend="openvino", tile_size=24)
    got = tiled.forward_tensor(x)
    assert tiled.tile_grid(
        *x.shape[-2:] if tiled.model.upsampling == "post" else [s * tiled.scale for s in x.shape[-2:]]
    ) != (1, 1)
    assert len(backends.cache_keys()) == 1
    assert torch.allclose(got, exact, atol=1e-4)


def test_missing_runtime_falls_back_to_torch_with_one_warning(own_weights, monkeypatch):
    name, _ = own_weights
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    with pytest.warns(BackendFallback, match="openvino backend unavailable.*not installed") as caught:
        up = Upscaler(name, backend="openvino")
    assert len([w for w in caught if issubclass(w.category, BackendFallback)]) == 1
    assert up.backend == "torch" and up.runtime is None
    expected = Upscaler(name, backend="torch").upscale(crop())
    assert np.array_equal(np.asarray(up.upscale(crop())), np.asarray(expected))


def test_cli_names_the_fallback_in_one_warning_line(own_weights, monkeypatch, tmp_path, capsys):
    from srweb.cli import main

    name, _ = own_weights
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    crop().save(tmp_path / "in.png")
    monkeypatch.setenv("SRWEB_BACKEND", "onnxruntime")
    from srweb.config import get_settings

    get_settings.cache_clear()
    assert (
        main(["upscale", str(tmp_path / "in.png"), "--weights", name, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("srweb: warning:")]
    assert len(lines) == 1 and "onnxruntime" in lines[0] and "running on torch" in lines[0]
    assert (tmp_path / "out" / "in.png").is_file()


@pytest.mark.skipif(not any(c.name == "openvino" for c in GRAPH_CHOICES), reason="OpenVINO is not installed")
def test_compiled_models_are_reused_and_evicted_when_weights_change(own_weights):
    from srweb.inference.upscaler import load_cached

    name, folder = own_weights
    backends.clear_cache()
    up = Upscaler(name, backend="openvino", precision="fp32")
    first = up.upscale(crop())
    assert up.last_compile_seconds > 0
    keys = backends.cache_keys()
    assert len(keys) == 1 and keys[0][0] == read_card(folder / f"{name}.json").sha256
    again = Upscaler(name, backend="openvino", precision="fp32")  # another upscaler, same weights and size
    again.upscale(crop())
    assert again.last_compile_seconds == 0 and backends.cache_keys() == keys
    up.upscale(crop(48, 30))  # another input size: a second compiled model
    assert len(backends.cache_keys()) == 2

    model, card = load_cached(name)  # new weights under the same name
    with torch.no_grad():
        next(model.parameters()).mul_(0.5)
    save_weights(model, name, weights_dir=folder, training=card.training, metrics=card.metrics)
    changed = Upscaler(name, backend="openvino", precision="fp32")
    assert changed.card.sha256 != card.sha256
    assert all(key[0] != card.sha256 for key in backends.cache_keys())  # the old ones are gone
    changed_out = changed.upscale(crop())
    assert [key[0] for key in backends.cache_keys()] == [changed.card.sha256]
    assert not np.array_equal(np.asarray(changed_out), np.asarray(first))


def _record(folder, name: str, host: str, choice: BackendChoice) -> None:
    path = folder / f"{name}.json"
    card = read_card(path)
    card.inference["backend"] = {"name": choice.name, "precision": choice.precision, "host": host, "ms_per_mpix": 1.0}
    row = {"ms_per_mpix": 1.0, "ok": True} | ({} if choice.fp32_ends is None else {"fp32_ends": choice.fp32_ends})
    card.inference["backends"] = {
        "host": host,
        "results": {choice.label: row, "torch/fp32": {"ms_per_mpix": 5.0, "ok": True}},
    }
    write_card(card, path)


@pytest.mark.skipif(not any(c.name == "openvino" for c in GRAPH_CHOICES), reason="OpenVINO is not installed")
def test_recorded_fp32_ends_are_followed_and_compiled_apart(own_weights):
    """What the bench measured for the winner (its first and last convolution in fp32 or not) is what
    runs on that processor; elsewhere the rule (luma models only) holds, and an argument overrides both."""
    from srweb.inference.upscaler import load_cached

    name, folder = own_weights
    rule = backends.wants_fp32_ends(load_cached(name)[0])
    backends.clear_cache()
    _record(folder, name, HERE, BackendChoice("openvino", "fp32", fp32_ends=not rule))
    up = Upscaler(name)
    assert (up.backend, up.fp32_ends) == ("openvino", not rule)
    assert up.runtime.fp32_ends is False  # nothing to keep in fp32 when everything is
    assert Upscaler(name, fp32_ends=rule).fp32_ends is rule
    _record(folder, name, "Some Other CPU @ 1.0GHz", BackendChoice("openvino", "fp32", fp32_ends=not rule))
    assert Upscaler(name, backend="openvino").fp32_ends is rule
    if any(c.label == "openvino/bf16" for c in GRAPH_CHOICES):
        for ends in (False, True):
            bf16 = Upscaler(name, backend="openvino", precision="bf16", fp32_ends=ends)
            assert bf16.runtime.fp32_ends is ends
            bf16.upscale(crop())
        assert {key[-1] for key in backends.cache_keys() if key[3] == "bf16"} == {False, True}  # compiled apart


@pytest.mark.skipif(not GRAPH_CHOICES, reason="no graph backend on this host")
def test_recorded_choice_is_followed_on_its_processor_only(own_weights, monkeypatch):
    from srweb.config import get_settings

    name, folder = own_weights
    choice = GRAPH_CHOICES[0]
    _record(folder, name, HERE, choice)
    up = Upscaler(name)
    assert (up.backend, up.precision) == (choice.name, choice.precision)
    assert Upscaler(name, backend="torch").backend == "torch"  # the argument overrides the card
    monkeypatch.setenv("SRWEB_BACKEND", "torch")  # and so does the setting
    get_settings.cache_clear()
    assert Upscaler(name).backend == "torch"
    monkeypatch.delenv("SRWEB_BACKEND")
    get_settings.cache_clear()

    _record(folder, name, "Some Other CPU @ 1.0GHz", choice)  # measured elsewhere: ignored until re-benched
    assert Upscaler(name).backend == "torch"


def test_choose_backend_rules():
    table = {
        "host": HERE,
        "results": {
            "openvino/bf16": {"ms_per_mpix": 10, "ok": True},
            "openvino/fp32": {"ms_per_mpix": 30, "ok": True},
            "onnxruntime/fp32": {"ms_per_mpix": 20, "ok": True},
            "torch/bf16": {"ms_per_mpix": 5, "ok": False},
        },
    }
    inference = {"backend": {"name": "openvino", "precision": "bf16", "host": HERE}, "backends": table}

    def pick(req: str, prec: str = "auto", dev: str = "cpu") -> BackendChoice:
        return choose_backend(req, prec, inference, dev, "bf16", HERE)

    assert pick("auto") == BackendChoice("openvino", "bf16")
    table["results"]["openvino/bf16"]["fp32_ends"] = True  # the bench kept its ends in fp32 to pass the guard
    assert pick("auto") == pick("openvino", "bf16") == BackendChoice("openvino", "bf16", fp32_ends=True)
    assert pick("openvino", "fp32").fp32_ends is None  # not measured: the Upscaler applies the rule
    del table["results"]["openvino/bf16"]["fp32_ends"]
    assert pick("auto", "fp32") == BackendChoice("onnxruntime", "fp32")  # the fastest fp32 that passed
    assert pick("auto", dev="cuda") == BackendChoice("torch", "bf16")  # graph backends run on the CPU
    assert pick("openvino", "fp32") == BackendChoice("openvino", "fp32")
    assert pick("onnxruntime") == BackendChoice("onnxruntime", "fp32")
    assert pick("torch") == BackendChoice("torch", "bf16")
    assert recorded_best(inference, "Other CPU") is None
    assert choose_backend("auto", "auto", inference, "cpu", "fp32", "Other CPU") == BackendChoice("torch", "fp32")
    # a graph backend asked for by name with nothing recorded: bf16 only where torch's guard passed it
    assert choose_backend("openvino", "auto", {}, "cpu", "bf16", HERE) == BackendChoice("openvino", "bf16")
    assert choose_backend("openvino", "auto", {}, "cpu", "fp32", HERE) == BackendChoice("openvino", "fp32")
    with pytest.raises(ValueError, match="backend must be"):
        pick("tensorrt")


def test_bare_module_and_baselines_stay_on_torch(monkeypatch, graph_cache):
    from srweb.config import get_settings
    from srweb.models import create_model

    monkeypatch.setenv("SRWEB_BACKEND", "openvino")
    get_settings.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallback)  # the setting is for saved weights: no warning
        assert Upscaler("bicubic", 2).backend == "torch"
        assert Upscaler(create_model("espcn", 2)).backend == "torch"
    with pytest.warns(BackendFallback, match="saved weights"):
        assert Upscaler(create_model("espcn", 2), backend="openvino").backend == "torch"
    get_settings.cache_clear()


def _contest(winner: str | None) -> dict:
    results = {
        "torch/fp32": {
            "ms": 100.0,
            "ms_per_mpix": 95.4,
            "first_call_ms": 120.0,
            "compile_s": 0.0,
            "speedup": 1.2,
            "psnr_delta_db": 0.0,
            "ok": True,
        },
        "openvino/bf16": {
            "ms": 30.0,
            "ms_per_mpix": 28.6,
            "first_call_ms": 90.0,
            "compile_s": 0.05,
            "speedup": 4.0,
            "psnr_delta_db": -0.004,
            "ok": True,
        },
        "onnxruntime/fp32": {"error": "onnxruntime backend unavailable (not installed): running on torch"},
    }
    return {
        "weights": "edsr-baseline-x4.general100",
        "scale": 4,
        "input": "256x256",
        "output": "1024x1024",
        "plain_ms": 120.0,
        "results": results,
        "winner": winner,
        "guard_db": 0.01,
        "dataset": "Set5",
        "speedup": 4.0 if winner else None,
    }


def test_stored_contest_names_the_winner_its_processor_and_every_candidate():
    from srweb.evaluation.backends_bench import goal_lines
    from srweb.evaluation.bench import _stored_speed
    from srweb.inference.backends import card_backends

    entries = card_backends(_contest("openvino/bf16"), "Some CPU")
    assert entries["backend"] == {"name": "openvino", "precision": "bf16", "host": "Some CPU", "ms_per_mpix": 28.6}
    assert set(entries["backends"]["results"]) == {
        "torch/fp32",
        "openvino/bf16",
    }  # the one that could not run is left out
    assert recorded_best(entries, "Some CPU") == BackendChoice("openvino", "bf16")
    assert _stored_speed({}, None, _contest("openvino/bf16")) == (28.6, True, "openvino/bf16")
    # no contest winner (no guard run): torch's path on the architecture's case, as before backends
    assert _stored_speed(
        {"fast_precision": "bf16"}, {"fast_mpix_per_s": 4.0, "plain_mpix_per_s": 1.0}, _contest(None)
    ) == (250.0, True, "torch/bf16")
    assert "backend" not in card_backends(_contest(None), "Some CPU")
    lines = goal_lines(
        [_contest("openvino/bf16")],
        {"tiled_peak_rss_mb": 1800, "output": "3840x2160", "model": "edsr-baseline-x4.general100"},
    )
    assert "4.0x plain fp32" in lines[0] and "met" in lines[0] and "1800 MB" in lines[1] and "NOT" not in lines[1]


def test_upscale_tab_reports_compile_time_apart(tmp_path):
    from srweb.ui.upscale import UpscaleResult, compile_note

    image = crop()
    result = UpscaleResult(image, image, "bicubic", 0.75, "cpu", "bf16", 1, tmp_path / "x.png", 4, "openvino", 0.25)
    assert compile_note(result) == "; first call for this size: 0.25 s compiling the openvino graph, 0.50 s running"
    result.compile_seconds = 0.0  # a later call of that size reuses the compiled model
    assert compile_note(result) == ""


@pytest.mark.skipif(not any(c.name == "openvino" for c in GRAPH_CHOICES), reason="OpenVINO is not installed")
def test_openvino_keeps_a_luma_models_first_and_last_convolution_in_fp32(graph_cache):
    """The rule torch follows (``wants_fp32_ends``) holds on OpenVINO too: the marked graph keeps the
    ends' precision, and where this CPU runs bf16 the compiled model runs them in fp32, the middle in bf16."""
    import openvino as ov

    from srweb.inference.upscaler import load_cached

    model, card = load_cached("espcn-x4.general100")
    assert backends.wants_fp32_ends(model) and not backends.wants_fp32_ends(load_cached(SHIPPED_RGB)[0])
    core = ov.Core()
    graph = core.read_model(str(backends.onnx_graph(model, card)))
    marked = backends._with_fp32_ends(ov, core, graph)
    convs = [op for op in marked.get_ordered_ops() if op.get_type_name() == "Convolution"]
    kept = ["DisablePrecisionConversion_0" in op.get_rt_info() for op in convs]
    assert len(convs) == 3 and kept == [True, False, True]
    if cpu_supports_bf16():
        marked.reshape({marked.inputs[0].any_name: [1, 1, 24, 32]})
        compiled = core.compile_model(marked, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
        runtime = [
            op.get_rt_info()["runtimePrecision"].astype(str)
            for op in compiled.get_runtime_model().get_ordered_ops()
            if op.get_rt_info()["layerType"].astype(str) == "Convolution"
        ]
        assert runtime == ["f32", "bf16", "f32"]


@pytest.mark.skipif(not cpu_supports_bf16(), reason="no bf16 candidates on this CPU")
def test_bench_retries_a_failing_bf16_candidate_with_fp32_ends(graph_cache, monkeypatch):
    """A bf16 graph candidate outside the guard runs again with its first and last convolution in fp32,
    and the row says so (``fp32_ends``); torch (whose guard other processors follow) and fp32 candidates
    are not retried. A guard of -1 dB fails them all."""
    from srweb.evaluation import backends_bench

    name = min((c for c in SHIPPED if c.arch == "espcn"), key=lambda c: c.scale).name
    monkeypatch.setattr(backends_bench, "wants_fp32_ends", lambda model: False)  # as for an RGB model
    row = backends_bench.bench_entry(name, 48, 32, repeats=1, guard_db=-1.0)
    for label, result in row["results"].items():
        if "error" in result:
            continue
        assert result["ok"] is False and row["winner"] is None
        retried = label.endswith("/bf16") and not label.startswith("torch/")
        assert result.get("fp32_ends") is (True if retried else False if label.endswith("/bf16") else None), label
