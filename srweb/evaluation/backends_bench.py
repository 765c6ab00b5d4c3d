"""``srweb bench``'s backend contest: every (backend, precision) this host can run, per weights entry.

For each weights entry (on its architecture's bench input): plain fp32 NCHW eager, then each
candidate of :func:`srweb.inference.backends.candidates`: its first call (compiling included) apart from its
steady state (median of repeats), and its Set5 PSNR minus torch fp32's (the quality guard). The
winner is the fastest candidate within the guard; ``--store`` writes it into the card with the
processor it was measured on (:func:`card_backends`), where :func:`srweb.inference.backends.choose_backend`
finds it.
"""

from __future__ import annotations

import copy
import time
import warnings

import numpy as np
import torch

from srweb.data.samples import benchmark_path
from srweb.evaluation.bench import QUALITY_GUARD_DB, _median_ms, run_bench
from srweb.evaluation.evaluate import evaluate
from srweb.imaging.resize import imresize
from srweb.inference.backends import OPENVINO_PRECISION, BackendChoice, BackendFallback, candidates, wants_fp32_ends
from srweb.inference.upscaler import Upscaler, cpu_supports_bf16, load_cached, pick_precision
from srweb.weights.files import list_weights

BENCH_TILE = 100_000  # one tile: time the network on the whole bench input
TILING_WEIGHTS = "edsr-baseline-x4.general100"  # the 4K memory goal's model


def _model_input(card, width: int, height: int) -> torch.Tensor:
    """A random (1, C, H, W) network input of the case size (upscaled first for pre-upsampling models)."""
    x = torch.rand(1, 1 if card.input_kind == "y" else 3, height, width, generator=torch.Generator().manual_seed(0))
    if card.upsampling == "pre":
        x = imresize(x, scale=card.scale).clamp(0, 1)
    return x


def _plain_ms(name: str, x: torch.Tensor, repeats: int) -> float:
    model, _ = load_cached(name)
    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()
    x = x.contiguous()

    def plain() -> None:
        with torch.no_grad():
            model(x)

    return _median_ms(plain, repeats)


def openvino_matmul_gflops(precision: str = "bf16", n: int = 2048, repeats: int = 5) -> float | None:
    """Achieved GFLOP/s of an ``n`` x ``n`` matrix product compiled by OpenVINO in ``precision``:
    its compute roof on this host, beside torch's (:func:`srweb.evaluation.bench.matmul_gflops`); None
    without OpenVINO."""
    try:
        import openvino as ov  # optional runtime
        from openvino import opset13 as ops
    except ImportError:
        return None

    a = ops.parameter([n, n], ov.Type.f32)
    b = ops.constant(np.random.default_rng(0).random((n, n), dtype=np.float32))
    graph = ov.Model([ops.matmul(a, b, False, False)], [a])
    config = {
        "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[precision],
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        "PERFORMANCE_HINT": "LATENCY",
    }
    request = ov.Core().compile_model(graph, "CPU", config).create_infer_request()
    x = np.random.default_rng(1).random((n, n), dtype=np.float32)
    ms = _median_ms(lambda: request.infer({0: x}), repeats)
    return round(2 * n**3 / ms / 1e6, 1)


def time_candidate(name: str, choice: BackendChoice, x: torch.Tensor, repeats: int, fp32_ends: bool) -> dict:
    """Steady-state ms (median of ``repeats``), first-call ms and compile seconds of ``choice`` on
    input ``x``; ``{"error": ...}`` when the backend cannot run here."""

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BackendFallback)
        up = Upscaler(name, backend=choice.name, precision=choice.precision, tile_size=BENCH_TILE, fp32_ends=fp32_ends)
    if up.backend != choice.name or up.precision != choice.precision:
        reason = next((str(w.message) for w in caught if issubclass(w.category, BackendFallback)), "fell back")
        return {"error": reason}
    start = time.perf_counter()
    up._forward(x)
    first_ms = (time.perf_counter() - start) * 1000
    compile_s = up.runtime.compile_seconds if up.runtime is not None else 0.0
    timed = {
        "ms": round(_median_ms(lambda: up._forward(x), repeats), 1),
        "first_call_ms": round(first_ms, 1),
        "compile_s": round(compile_s, 3),
        "upscaler": up,
    }
    return timed | ({"fp32_ends": fp32_ends} if choice.precision != "fp32" else {})


def _set5_psnr(upscale, name: str, dataset: str) -> float:

    return evaluate(upscale, benchmark_path(dataset), load_cached(name)[1].scale).psnr


def bench_entry(
    name: str,
    width: int,
    height: int,
    repeats: int = 3,
    quality: bool = True,
    guard_db: float = QUALITY_GUARD_DB,
    dataset: str = "Set5",
) -> dict:
    """One weights entry's contest on a ``width`` x ``height`` input (see the module's text)."""
    model, card = load_cached(name)
    x = _model_input(card, width, height)
    out_mpix = width * height * card.scale**2 / 1e6
    plain_ms = _plain_ms(name, x, repeats)
    exact = _set5_psnr(Upscaler(name, backend="torch", precision="fp32").upscale, name, dataset) if quality else None

    def measure(choice: BackendChoice, fp32_ends: bool) -> dict:
        """One candidate's times and, with ``quality``, its guard verdict."""
        timed = time_candidate(name, choice, x, repeats, fp32_ends)
        up = timed.pop("upscaler", None)
        if up is not None:
            timed["ms_per_mpix"] = round(timed["ms"] / out_mpix, 2)
            timed["speedup"] = round(plain_ms / timed["ms"], 2)
            if quality:
                delta = _set5_psnr(up.upscale, name, dataset) - exact
                timed.update(psnr_delta_db=round(delta, 4), ok=delta >= -guard_db)
        return timed

    ends = wants_fp32_ends(model)
    results = {}
    for choice in candidates("cpu", cpu_supports_bf16()):
        timed = measure(choice, ends)
        if quality and timed.get("ok") is False and choice.name != "torch" and choice.precision != "fp32" and not ends:
            # The first and last convolution in fp32 often bring a failing bf16 graph inside the guard.
            # Torch keeps the rule: its guard goes into the card for every processor and GPU, where
            # nothing records the ends.
            timed = measure(choice, True)
        results[choice.label] = timed
    passed = [(r["ms"], label) for label, r in results.items() if r.get("ok")]
    winner = min(passed)[1] if passed else None
    return {
        "weights": name,
        "scale": card.scale,
        "input": f"{width}x{height}",
        "output": f"{width * card.scale}x{height * card.scale}",
        "plain_ms": round(plain_ms, 1),
        "results": results,
        "winner": winner,
        "guard_db": guard_db,
        "dataset": dataset,
        "speedup": round(plain_ms / results[winner]["ms"], 2) if winner else None,
    }


def bench_backends(cases: tuple, repeats: int = 3, quality: bool = True, names: list[str] | None = None) -> list[dict]:
    """:func:`bench_entry` for every weights entry whose (architecture, scale) has a case (and whose
    name is in ``names``, if given), on that case's input."""

    sizes = {(arch, scale): (w, h) for arch, scale, w, h in cases}
    rows = []
    for card in list_weights():
        size = sizes.get((card.name, card.scale)) or sizes.get((card.arch, card.scale))  # an imported entry by name
        if size and (names is None or card.name in names):
            rows.append(bench_entry(card.name, *size, repeats=repeats, quality=quality))
    return rows


def run_with_backends(
    cases: tuple,
    repeats: int = 3,
    training: bool = True,
    quality: bool = True,
    compile: bool = False,
    backends: bool = True,
) -> dict:
    """:func:`srweb.evaluation.bench.run_bench` with the backend contest (``report["backends"]``): its
    guards stand in for the torch ones it measured already, the tiling case runs on edsr-baseline x4's
    winner, and the host line gets OpenVINO's roof."""
    contest = bench_backends(cases, repeats, quality) if backends else []
    winner = next((row["winner"] for row in contest if row["weights"] == TILING_WEIGHTS and row["winner"]), None)
    report = run_bench(
        cases,
        repeats,
        training,
        quality,
        compile,
        guards=torch_guards(contest, pick_precision("cpu", "auto")),
        tiling_on=(TILING_WEIGHTS, *winner.split("/")) if winner else None,
    )
    report["backends"] = contest
    if backends:
        report["host"]["openvino_matmul_gflops"] = {
            "fp32": openvino_matmul_gflops("fp32"),
            "bf16": openvino_matmul_gflops("bf16") if cpu_supports_bf16() else None,
        }
    return report


def torch_guards(rows: list[dict], precision: str) -> dict[str, dict]:
    """Weights name -> the quality entry of ``srweb bench`` (torch's fast ``precision`` against fp32)
    taken from the contest, so the guard is not run twice."""
    guards = {}
    for row in rows:
        r = row["results"].get(f"torch/{precision}", {})
        if "psnr_delta_db" in r:
            guards[row["weights"]] = {
                "weights": row["weights"],
                "precision": precision,
                "psnr_delta_db": r["psnr_delta_db"],
                "guard_db": row["guard_db"],
            }
    return guards


# The goals (issue 33), checked in one run: (weights, what is compared, the bound).
SPEEDUP_GOAL = ("edsr-baseline-x4.general100", 3.4)  # winner vs plain fp32 eager, 256x256 -> 1024x1024
MS_GOAL = ("espcn-x4.general100", "1920x1080", 25.0)  # winner's ms for a 1080p output
RSS_GOAL_MB = 2000  # peak RSS of the tiled 3840x2160 edsr-baseline x4 output


def goal_lines(rows: list[dict], tiling: dict | None) -> list[str]:
    """One line per goal this run measured: the figure, the bound, met or not."""
    lines, by_name = [], {row["weights"]: row for row in rows}
    edsr = by_name.get(SPEEDUP_GOAL[0])
    if edsr and edsr["speedup"]:
        met = "met" if edsr["speedup"] >= SPEEDUP_GOAL[1] else "NOT met"
        lines.append(
            f"goal {SPEEDUP_GOAL[0]} {edsr['input']}: {edsr['speedup']}x plain fp32 on {edsr['winner']} "
            f"(>= {SPEEDUP_GOAL[1]}x: {met})"
        )
    espcn = by_name.get(MS_GOAL[0])
    if espcn and espcn["winner"] and espcn["output"] == MS_GOAL[1]:
        ms = espcn["results"][espcn["winner"]]["ms"]
        lines.append(
            f"goal {MS_GOAL[0]} -> {MS_GOAL[1]}: {ms} ms on {espcn['winner']} "
            f"(<= {MS_GOAL[2]:g} ms: {'met' if ms <= MS_GOAL[2] else 'NOT met'})"
        )
    if tiling:
        peak = tiling["tiled_peak_rss_mb"]
        lines.append(
            f"goal tiled {tiling['output']} from {tiling['model']} on {tiling.get('tiled_backend', 'torch')}: "
            f"{peak} MB peak RSS (< {RSS_GOAL_MB} MB: {'met' if peak < RSS_GOAL_MB else 'NOT met'})"
        )
    return lines


def format_rows(rows: list[dict]) -> list[str]:
    """The contest as text lines: one per entry, the winner first."""
    lines = []
    for row in rows:
        timed = sorted((r["ms"], label, r) for label, r in row["results"].items() if "ms" in r)
        parts = []
        for ms, label, r in timed:
            guard = "" if "ok" not in r else (f" {r['psnr_delta_db']:+.4f} dB" + ("" if r["ok"] else " FAILS"))
            compile_note = f", compile {r['compile_s']:.2f} s" if r["compile_s"] else ""
            ends = " fp32 ends" if r.get("fp32_ends") else ""
            parts.append(f"{label}{ends} {ms} ms ({r['speedup']}x{guard}{compile_note})")
        skipped = [f"{label}: {r['error']}" for label, r in row["results"].items() if "error" in r]
        winner = f"winner {row['winner']} {row['speedup']}x" if row["winner"] else "no winner (no guard run)"
        lines.append(f"{row['weights']} {row['input']}->{row['output']}: plain {row['plain_ms']} ms; {winner}")
        lines.append("    " + "; ".join(parts) + ("; " + "; ".join(skipped) if skipped else ""))
    return lines
