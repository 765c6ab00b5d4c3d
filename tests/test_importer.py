"""``srweb import``: community models (random-weight ESRGAN, Real-ESRGAN compact, SwinIR, SPAN in small
configs, saved as .pth and .safetensors) imported, then upscaled (tiled == untiled), evaluated, rated
and ranked like srweb's own weights; and every bad file refused in one line with nothing written.

Evaluation and the rating pool use the built-in Set5."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from srweb.rating import pool as rating_pool
from srweb.cli import main
from srweb.config import get_settings
from srweb.weights.importer import ModelImportError, import_model, precision_verdict, receptive_radius
from srweb.inference.upscaler import Upscaler, card_precision
from srweb.models.community import CommunityModel, CommunityModelError, build
from srweb.track.db import dispose_engine
from srweb.weights.files import file_sha256, list_weights, load_weights, resolve_weights, weights_source

REPO = Path(__file__).resolve().parents[1]
ARCHES = {  # spandrel id, scale
    "esrgan": ("ESRGAN", 4),
    "compact": ("Compact", 4),
    "swinir": ("SwinIR", 2),
    "span": ("SPAN", 2),
}


def build_networks() -> dict[str, torch.nn.Module]:
    """Random-weight instances of spandrel's own classes, small enough for a CPU test."""
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SPAN import SPAN
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(0)
    return {
        "esrgan": ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4),
        "compact": Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4),
        "swinir": SwinIR(
            img_size=32,
            embed_dim=12,
            depths=[2, 2],
            num_heads=[2, 2],
            window_size=8,
            upscale=2,
            upsampler="pixelshuffledirect",
            mlp_ratio=2.0,
        ),
        "span": SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2),
    }


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """``(arch, ".pth" | ".safetensors") -> file``; the .pth in the basicsr layout (``params_ema``)."""
    folder = tmp_path_factory.mktemp("community")
    files = {}
    for key, net in build_networks().items():
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        torch.save({"params_ema": state}, folder / f"{key}.pth")
        save_file({k: v.clone() for k, v in state.items()}, str(folder / f"{key}.safetensors"))
        files[key, ".pth"], files[key, ".safetensors"] = folder / f"{key}.pth", folder / f"{key}.safetensors"
    return files


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Fresh state and user weights; the shipped folder holds one real entry; an empty data root (the
    built-in Set5 is used); a device without a fast precision, so imports run no quality guard (the
    guard has its own test) on any test machine."""
    from srweb.weights import importer

    monkeypatch.setattr(importer, "pick_precision", lambda device, requested="auto": "fp32")
    shipped = tmp_path / "weights"
    shipped.mkdir()
    for suffix in (".json", ".safetensors"):
        (shipped / f"espcn-x2.general100{suffix}").write_bytes(
            (REPO / "weights" / f"espcn-x2.general100{suffix}").read_bytes()
        )
    monkeypatch.setenv("SRWEB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SRWEB_WEIGHTS_DIR", str(shipped))
    monkeypatch.setenv("SRWEB_DATA_ROOT", str(tmp_path / "no-data"))
    for name in (
        "SRWEB_DATABASE_URL",
        "SRWEB_CACHE_DIR",
        "SRWEB_USER_WEIGHTS_DIR",
        "SRWEB_PUBLIC",
        "SPACE_ID",
        "SRWEB_MAX_IMPORT_MB",
    ):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield tmp_path
    dispose_engine()
    get_settings.cache_clear()


def user_folder() -> Path:
    return Path(get_settings().user_weights_dir)


def written() -> list[str]:
    folder = user_folder()
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- import, card, loading ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("key", list(ARCHES))
def test_import_writes_a_card_like_srwebs_own_and_runs_as_spandrel_does(env, model_files, key, suffix):
    arch, scale = ARCHES[key]
    path = model_files[key, suffix]
    card = import_model(path, source="https://example.org/model", license="CC0-1.0")
    assert (card.name, card.arch, card.scale) == (f"{arch.lower()}-x{scale}.{key}", arch, scale)
    assert card.config["loader"] == "spandrel" and card.config["in_channels"] == 3
    assert card.input_kind == "rgb" and card.upsampling == "post"
    provenance = card.training["imported"]
    assert provenance["source"] == "https://example.org/model" and provenance["license"] == "CC0-1.0"
    assert provenance["file_sha256"] == file_sha256(path) and provenance["imported"] == card.created
    tensors, card_path = resolve_weights(card.name)
    assert tensors.parent == user_folder() and card.sha256 == file_sha256(tensors)
    assert json.loads(card_path.read_text())["num_params"] == card.num_params
    assert weights_source(card.name) == "imported" and card.name in {c.name for c in list_weights()}

    import srweb

    assert srweb.import_model is import_model  # the Python API
    model, loaded = load_weights(card.name)  # built by spandrel from the safetensors
    assert isinstance(model, CommunityModel) and loaded.num_params == sum(p.numel() for p in model.parameters())
    import spandrel

    reference = spandrel.ModelLoader().load_from_file(str(model_files[key, ".safetensors"]))
    x = torch.rand(1, 3, 20, 24)
    ours = Upscaler(card.name, precision="fp32", channels_last=False).forward_tensor(x)
    assert ours.shape == (1, 3, 20 * scale, 24 * scale)
    assert (ours - reference(x)).abs().max() < 1e-5


@pytest.mark.parametrize("key", list(ARCHES))
def test_tiled_equals_untiled(env, model_files, key):
    card = import_model(model_files[key, ".pth"])
    up = Upscaler(card.name, precision="fp32")
    assert up.tile_overlap >= card.config["receptive_radius"] > 0 and card.config["radius_exact"]
    x = torch.rand(1, 3, 70, 61)
    full = up.forward_tensor(x)
    up.tile_size = 16
    tiles = []
    tiled = up.forward_tensor(x, progress=lambda done, total: tiles.append((done, total)))
    assert tiles[-1][0] == tiles[-1][1] > 1
    assert full.shape == tiled.shape
    assert (full - tiled).abs().max() < 1e-3


def test_a_window_transformer_gets_tiles_on_its_window_and_padded_input(env, model_files):
    card = import_model(model_files["swinir", ".safetensors"])
    up = Upscaler(card.name, precision="fp32")
    assert up.tile_multiple == 8 and up.tile_overlap % 8 == 0
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (13, 11, 3), dtype=np.uint8))  # below 16
    assert up.upscale(img).size == (22, 26)


@pytest.mark.parametrize("key", ["hat", "dat"])
def test_transformers_with_whole_image_layers_tile_on_their_windows_within_the_tolerance(env, key):
    """HAT (8-px windows, channel attention) and DAT (4x8 rectangles, channel attention): tiles start on
    the window multiple; a layer that sees the whole image makes the radius inexact, as the card says."""
    from spandrel.architectures.DAT import DAT
    from spandrel.architectures.HAT import HAT

    torch.manual_seed(0)
    net = (
        HAT(
            img_size=32,
            embed_dim=30,
            depths=(2,),
            num_heads=(2,),
            window_size=8,
            compress_ratio=3,
            squeeze_factor=5,
            upscale=2,
            mlp_ratio=2.0,
        )
        if key == "hat"
        else DAT(
            img_size=32, embed_dim=32, depth=[2], num_heads=[2], split_size=[4, 8], expansion_factor=2.0, upscale=2
        )
    )
    torch.save(net.state_dict(), env / f"{key}.pth")
    card = import_model(env / f"{key}.pth")
    assert card.arch == key.upper() and card.config["radius_exact"] is False
    up = Upscaler(card.name, precision="fp32")
    assert up.tile_multiple == 8
    x = torch.rand(1, 3, 45, 37)
    full = up.forward_tensor(x)
    up.tile_size = 16
    assert (full - up.forward_tensor(x)).abs().max() < 1e-3


def test_a_model_spandrel_builds_but_that_cannot_run_is_refused(env, capsys):
    from spandrel.architectures.DAT import DAT

    broken = env / "dat-broken.pth"  # 12 channels: DAT's channel interaction gets 12 // 16 = 0 of them
    torch.save(
        DAT(img_size=32, embed_dim=12, depth=[2], num_heads=[2], split_size=[4, 8], upscale=2).state_dict(), broken
    )
    assert_refused(["import", str(broken)], capsys, "spandrel built a DAT x2 model", "fails to run")


def test_a_smaller_overlap_than_measured_shows_seams(env, model_files):
    """The measured radius is needed: the compact model's tiles differ with less context."""
    card = import_model(model_files["compact", ".pth"])
    up = Upscaler(card.name, precision="fp32", tile_size=16)
    up.tile_overlap = card.config["receptive_radius"] - 3
    x = torch.rand(1, 3, 48, 48)
    assert (up.forward_tensor(x) - Upscaler(card.name, precision="fp32").forward_tensor(x)).abs().max() > 1e-3


def test_half_precision_only_where_spandrel_allows_it(env, model_files, monkeypatch):
    from srweb.weights import importer

    monkeypatch.setattr(importer, "pick_precision", lambda device, requested="auto": "fp16")
    swinir = build(torch.load(model_files["swinir", ".pth"], weights_only=True))
    verdict = precision_verdict(swinir, "cuda")
    assert verdict["fast_path_ok"] is False and "not supporting fp16" in verdict["guard"]
    assert card_precision(verdict, "cpu") == "fp32"
    compact = build(torch.load(model_files["compact", ".pth"], weights_only=True))
    assert precision_verdict(compact, "cuda")["guard"].startswith("not measured")  # fp32 until guarded
    monkeypatch.setattr(importer, "pick_precision", lambda device, requested="auto": "fp32")
    assert precision_verdict(compact, "cpu") == {"fast_precision": "fp32", "fast_path_ok": True}


def test_the_quality_guard_runs_at_import_where_the_device_has_a_fast_precision(env, model_files, monkeypatch):
    """With a Set5 folder (here: generated images) and a bf16 device, the import measures bf16 against fp32."""
    from srweb.evaluation import bench
    from srweb.weights import importer

    set5 = env / "no-data" / "Set5"
    set5.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(set5 / f"img{i}.png")
    for module in (importer, bench):
        monkeypatch.setattr(
            module, "pick_precision", lambda device, requested="auto": "bf16" if requested == "auto" else requested
        )
    card = import_model(model_files["span", ".pth"])
    verdict = card.inference
    assert verdict["fast_precision"] == "bf16" and verdict["guard"] == "Set5 PSNR within 0.01 dB of fp32"
    assert isinstance(verdict["fast_psnr_delta_db"], float) and verdict["fast_path_ok"] == (
        verdict["fast_psnr_delta_db"] >= -0.01
    )
    assert load_weights(card.name)[1].inference == verdict  # kept in the card on disk


def test_receptive_radius_sees_attention_that_convolution_hooks_miss(env, model_files):
    from srweb.inference.upscaler import profile_model

    swinir = build(torch.load(model_files["swinir", ".pth"], weights_only=True))
    measured = receptive_radius(swinir)
    assert measured["radius_exact"] and measured["receptive_radius"] > profile_model(swinir, 3, "post").receptive_radius


# --- everywhere weights work -----------------------------------------------------------------------


def test_cli_import_upscale_eval_then_leaderboard_and_rating_pool(env, model_files, capsys, monkeypatch):
    from srweb.ui import leaderboard as lb

    for key in ("compact", "span"):
        assert main(["import", str(model_files[key, ".pth"]), "--license", "MIT"]) == 0
    out = capsys.readouterr().out
    assert "imported compact-x4.compact: Compact x4, 3 channels in" in out and "tile overlap" in out
    assert main(["models"]) == 0
    listed = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["span-x2.span", "x2", "64,300", "-", "imported"] in listed
    picture = env / "in.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(picture)
    assert main(["upscale", str(picture), "--weights", "compact-x4.compact", "--out", str(env / "out")]) == 0
    assert Image.open(env / "out" / "in.png").size == (120, 96)
    assert (
        main(
            [
                "compare",
                "--image",
                str(picture),
                "--scale",
                "2",
                "--weights",
                "span-x2.span",
                "bicubic",
                "--crop",
                "0",
                "0",
                "12",
                "--out",
                str(env / "compare.png"),
            ]
        )
        == 0
    )
    assert (env / "compare.png").is_file()
    capsys.readouterr()
    assert main(["eval", "--weights", "span-x2.span", "--scale", "2", "--dataset", "Set5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["psnr"] > 5 and result["scale"] == 2 and len(result["images"]) == 5

    frame, datasets = lb.load_board()
    rows = frame.set_index("weights")
    assert {"span-x2.span", "compact-x4.compact", "espcn-x2.general100"} <= set(rows.index)
    assert "Set5" in datasets and rows.loc["span-x2.span", "psnr_Set5"] == pytest.approx(result["psnr"], abs=1e-3)
    assert rows.loc["span-x2.span", "arch"] == "SPAN"

    monkeypatch.setattr(rating_pool, "MAX_CROPS", 2)
    pool = rating_pool.build_pool()  # crops of the built-in Set5
    assert {"compact-x4.compact", "span-x2.span"} <= set(pool.entries)
    crop = next(iter(pool.crops))
    assert pool.image_path(crop, 2, "span-x2.span").is_file()


def test_bench_times_an_imported_entry_as_itself(env, model_files, capsys):
    from srweb.evaluation.bench import leaderboard_cases, run_bench

    card = import_model(model_files["compact", ".pth"])
    cases = leaderboard_cases(())
    assert (card.name, 4, 240, 135) in cases and ("espcn", 2, 480, 270) in cases
    report = run_bench(((card.name, 4, 32, 32),), repeats=1, training=False, quality=False)
    assert report["inference"][0]["model"] == card.name and report["inference"][0]["fast_ms"] > 0

    from srweb.evaluation.bench import record
    from srweb.ui import leaderboard as lb

    argv = ["bench", "--models", card.name, "espcn", "--quick", "--no-quality", "--repeats", "1", "--json"]
    assert main(argv) == 0  # named beside an architecture of the default cases, at its own scale
    timed = {(r["model"], r["scale"]) for r in json.loads(capsys.readouterr().out)["inference"]}
    assert {(card.name, 4), ("espcn", 4)} <= timed

    record(report)  # what `srweb bench --store` does: the card and the Leaderboard get its speed
    speed = load_weights(card.name)[1].inference["speed"]
    frame, _ = lb.load_board()
    assert frame.set_index("weights").loc[card.name, "ms_per_mpix"] == speed["ms_per_mpix"] > 0


@pytest.mark.parametrize("key", ["compact", "span", "swinir"])
def test_onnx_export_where_the_architecture_exports(env, model_files, monkeypatch, key):
    """Convolutional models export (SPAN's re-parameterised blocks are fused first: torch.export used to
    crash on them); SwinIR does not, in one line."""
    pytest.importorskip("onnxruntime")
    from srweb.weights.onnx import ExportError, cached_export

    monkeypatch.setenv("SRWEB_CACHE_DIR", str(env / "cache"))
    get_settings.cache_clear()
    card = import_model(model_files[key, ".safetensors"])
    if key == "swinir":
        with pytest.raises(ExportError, match="swinir-x2.swinir: cannot export to ONNX"):
            cached_export(card.name)
    else:  # checked against PyTorch with onnxruntime before it is kept
        assert cached_export(card.name).stat().st_size > 0


def test_hub_reference_is_fetched_then_imported(env, model_files, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, *, revision=None, library_name=None, **_):
        calls.append((repo_id, filename, revision))
        return str(model_files["compact", ".pth"])

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    card = import_model("hf://someone/models/compact.pth", name="compact-x4.hub")
    assert calls == [("someone/models", "compact.pth", None)]
    assert card.training["imported"]["source"] == "hf://someone/models/compact.pth"


# --- bad input: one line, nothing written ----------------------------------------------------------


class Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def assert_refused(argv: list[str], capsys, *fragments: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("srweb: error:") and len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    assert written() == []
    return err


@pytest.mark.parametrize("legacy", [False, True])
def test_a_pickle_that_would_run_code_never_runs(env, capsys, legacy):
    marker = env / "pwned"
    bad = env / "evil.pth"
    torch.save(
        {"conv.weight": torch.zeros(1), "payload": Payload(marker)}, bad, _use_new_zipfile_serialization=not legacy
    )
    assert_refused(["import", str(bad)], capsys, "evil.pth", "refused", "would call getattr", "nothing was executed")
    assert not marker.exists()


def test_a_state_dict_spandrel_does_not_recognise(env, capsys):
    odd = env / "odd.safetensors"
    save_file({"encoder.layer.weight": torch.zeros(4, 4)}, str(odd))
    assert_refused(
        ["import", str(odd)], capsys, "spandrel does not recognise", "UnsupportedModelError", "encoder.layer.weight"
    )


def test_a_file_over_the_size_limit_is_refused_before_reading(env, capsys, monkeypatch):
    big = env / "big.pth"
    big.write_bytes(os.urandom(2 * 1024 * 1024 + 1))
    monkeypatch.setenv("SRWEB_MAX_IMPORT_MB", "2")
    get_settings.cache_clear()

    def never(*args, **kwargs):
        raise AssertionError("read a file over the limit")

    monkeypatch.setattr(torch, "load", never)
    assert_refused(["import", str(big)], capsys, "over the 2 MB import limit", "not read")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_truncated_file(env, model_files, capsys, suffix):
    whole = model_files["compact", suffix].read_bytes()
    cut = env / f"cut{suffix}"
    cut.write_bytes(whole[: len(whole) // 2])
    assert_refused(["import", str(cut)], capsys, "corrupt or truncated")


def test_not_a_model_file_at_all(env, capsys):
    junk = env / "notes.txt"
    junk.write_text("hello")
    assert_refused(["import", str(junk)], capsys, "not a model file")


def test_an_extra_arches_architecture_names_its_licence(env, capsys):
    keys = [
        "conv_first.weight",
        "layers.0.residual_group.blocks.0.attn.aligned_relative_position_index",
        "layers.0.residual_group.blocks.0.norm1.weight",
    ]
    srformer = env / "srformer.pth"
    torch.save({k: torch.zeros(2, 2) for k in keys}, srformer)
    assert_refused(["import", str(srformer)], capsys, "SRFormer", "CC BY-NC 4.0", "spandrel_extra_arches")


def test_a_name_colliding_with_a_shipped_entry(env, model_files, capsys):
    assert_refused(
        ["import", str(model_files["compact", ".pth"]), "--name", "espcn-x2.general100"],
        capsys,
        "espcn-x2.general100",
        "shipped entry",
    )
    assert main(["import", str(model_files["compact", ".pth"]), "--name", "mine"]) == 0
    capsys.readouterr()
    assert main(["import", str(model_files["span", ".pth"]), "--name", "mine"]) == 2
    assert "weights already there" in capsys.readouterr().err
    assert load_weights("mine")[1].arch == "Compact"  # the first import is untouched


def test_a_grey_model_runs_on_luma_like_srwebs_y_models(env):
    from spandrel.architectures.Compact import Compact

    grey = env / "grey.pth"
    torch.manual_seed(0)
    torch.save(Compact(num_in_ch=1, num_out_ch=1, num_feat=4, num_conv=1, upscale=2).state_dict(), grey)
    card = import_model(grey)
    assert card.input_kind == "y" and card.config["in_channels"] == 1
    up = Upscaler(card.name, precision="fp32")
    colour = Image.fromarray(np.random.default_rng(3).integers(0, 256, (10, 12, 3), dtype=np.uint8))
    assert up.upscale(colour).size == (24, 20) and up.upscale(colour.convert("L")).mode == "L"


def test_models_srweb_does_not_run_are_refused_at_import(env, capsys):
    from spandrel.architectures.Compact import Compact

    restoration = env / "x1.pth"
    torch.save(Compact(num_in_ch=3, num_out_ch=3, num_feat=4, num_conv=1, upscale=1).state_dict(), restoration)
    assert_refused(["import", str(restoration)], capsys, "x1", "super-resolution")
    four = env / "rgba.pth"
    torch.save(Compact(num_in_ch=4, num_out_ch=4, num_feat=4, num_conv=1, upscale=2).state_dict(), four)
    assert_refused(["import", str(four)], capsys, "takes 4 channels", "RGB (3 -> 3) or grey (1 -> 1)")


def test_output_of_the_wrong_size_is_refused(env, model_files):
    net = build(torch.load(model_files["compact", ".pth"], weights_only=True))
    net._call = lambda model, image: model(image)[..., :-1, :]  # one row short
    with pytest.raises(CommunityModelError, match="not 3 x 64 x 64"):
        net(torch.rand(1, 3, 16, 16))
    with pytest.raises(ModelImportError):
        import_model(Path("/nonexistent/model.pth"))
    assert written() == []
