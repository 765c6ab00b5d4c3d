"""`srweb bench` runs and reports both paths; the fast path keeps to its quality guard.

Speeds are never asserted here (machines are noisy): only that the numbers exist and make sense.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import set5_present
from srweb.evaluation.bench import (
    DEFAULT_CASES,
    QUALITY_GUARD_DB,
    bench_pipeline,
    bench_tiling,
    card_speed,
    leaderboard_cases,
    psnr_delta,
)
from srweb.inference.upscaler import device_name
from srweb.models import create_model
from srweb.weights.files import list_weights


def test_bench_cli_reports_fast_and_plain_paths(tmp_path):
    env_cmd = [
        sys.executable,
        "-m",
        "srweb.cli",
        "bench",
        "--quick",
        "--json",
        "--no-store",
        "--no-quality",
        "--models",
        "espcn",
        "fsrcnn",
        "--repeats",
        "1",
    ]
    out = subprocess.run(env_cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["host"]["threads"] >= 1 and report["host"]["torch"] and report["host"]["matmul_gflops"]["fp32"] > 0
    assert [r["model"] for r in report["inference"]] == ["espcn", "fsrcnn"]
    for r in report["inference"]:
        assert r["plain_ms"] > 0 and r["fast_ms"] > 0 and r["peak_rss_mb"] > 0
        # The report rounds ms to 0.1 and the ratio (of the unrounded times) to 0.01.
        lo = (r["plain_ms"] - 0.05) / (r["fast_ms"] + 0.05)
        hi = (r["plain_ms"] + 0.05) / max(r["fast_ms"] - 0.05, 1e-6)
        assert lo - 0.005 <= r["speedup"] <= hi + 0.005
        assert r["precision"] in ("fp32", "bf16", "fp16")


def test_leaderboard_speed_is_the_path_the_card_runs():
    case = {"fast_mpix_per_s": 4.0, "plain_mpix_per_s": 1.6}
    assert card_speed({"fast_path_ok": True, "fast_precision": "bf16"}, case) == (250.0, True)
    assert card_speed({"fast_path_ok": False, "fast_precision": "bf16"}, case) == (625.0, False)
    assert card_speed({}, case) == (250.0, True)  # never guarded: the fast path is what runs


def test_stored_bench_times_every_shipped_entry():
    """`srweb bench` stores speed per shipped card through its (architecture, scale) case: each
    one needs a case, and the model the case builds must carry the card's architecture name."""
    cases = leaderboard_cases()
    assert cases[: len(DEFAULT_CASES)] == DEFAULT_CASES
    timed = {(create_model(arch, scale).arch, scale) for arch, scale, _, _ in cases}
    assert {(card.arch, card.scale) for card in list_weights()} <= timed
    assert all((w * s, h * s) == (960, 540) for _, s, w, h in cases[len(DEFAULT_CASES) :])


def test_pipeline_bench_measures_loader_wait_and_tracking():
    result = bench_pipeline(steps=3, batch=2, patch=24)
    assert result["steps"] == 3 and result["it_per_s"] > 0
    assert 0 <= result["loader_wait_share"] < 1
    assert 0 < result["tracking_share"] < 1  # the buffer was written (close flushes)


def test_tiling_bench_compares_tiled_with_untiled():
    result = bench_tiling("espcn", 4, 120, 68, repeats=1)
    assert result["output"] == "480x272" and result["tiled_s"] > 0 and result["untiled_s"] > 0
    assert result["tiled_peak_rss_mb"] > 0 and result["untiled_grid"] == "1x1"


@pytest.mark.skipif(not set5_present(), reason="Set5 is not beside the checkout")
@pytest.mark.parametrize(
    "card",
    [
        c
        for c in list_weights()
        if c.inference.get("fast_path_ok")
        and c.inference.get("fast_precision", "fp32") != "fp32"
        and c.num_params < 100_000
    ],
    ids=lambda c: c.name,
)
def test_shipped_fast_path_stays_within_the_guard(card):
    # A card that says its fast path is safe must hold to it on Set5 (PSNR Y within 0.01 dB of fp32).
    # bf16 kernels round differently across CPU generations (AVX512-BF16, AMX): the verdict holds
    # for the processor it was measured on.
    if card.inference.get("measured_on") != device_name("cpu"):
        pytest.skip(f"guard measured on {card.inference.get('measured_on')}, this is {device_name('cpu')}")
    precision, delta = psnr_delta(card.name)
    if precision == "fp32":
        pytest.skip("no bf16/fp16 on this machine: the fast path is fp32")
    assert delta >= -QUALITY_GUARD_DB, f"{card.name}: fast path loses {-delta:.4f} dB"


def test_bench_writes_the_cards_only_when_asked():
    # The cards are files of the checkout: a plain `srweb bench` on a laptop must not rewrite them.
    from srweb.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["bench"]).store is False
    assert parser.parse_args(["bench", "--store"]).store is True
    assert parser.parse_args(["bench", "--no-store"]).store is False  # the old spelling still parses
