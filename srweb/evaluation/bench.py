"""``srweb bench``: fast path vs plain fp32 NCHW eager, measured in one process.

For each model: output megapixels/s of both paths (median of repeats after warm-up), their
ratio, peak RSS, achieved GFLOP/s (counted with ``torch.utils.flop_counter``) and, for shipped
weights, the Set5 PSNR delta of the fast path (the quality guard). Training: it/s of the
trainer's fast step (bf16 autocast + channels_last) vs plain fp32 for edsr-baseline x2.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from srweb.inference.upscaler import (
    Upscaler,
    cpu_supports_bf16,
    device_name,
    guard_verdict,
    load_cached,
    pick_precision,
)
from srweb.config import resolve_device
from srweb.data.samples import benchmark_path
from srweb.evaluation.evaluate import evaluate
from srweb.imaging.resize import imresize
from srweb.inference.backends import card_backends
from srweb.models import create_model, list_models
from srweb.track.db import dispose_engine, init_db, write_transaction
from srweb.track.evals import record_speed
from srweb.track.runs import MetricsBuffer, create_run
from srweb.train.config import TrainConfig
from srweb.train.trainer import Trainer
from srweb.weights.files import list_weights, load_weights, read_card, resolve_weights, write_card

DEFAULT_CASES = (
    ("espcn", 4, 480, 270),
    ("fsrcnn", 3, 360, 240),
    ("edsr-baseline", 4, 256, 256),
    ("srcnn", 3, 240, 160),
)
QUALITY_GUARD_DB = 0.01


@dataclass
class InferenceResult:
    model: str
    scale: int
    input: str
    plain_ms: float
    fast_ms: float
    speedup: float
    fast_mpix_per_s: float
    plain_mpix_per_s: float
    fast_gflops: float
    plain_gflops: float
    peak_rss_mb: float
    precision: str
    psnr_delta_db: float | None = None
    compiled_ms: float | None = None  # the fast path under torch.compile (``--compile``)


def host_info() -> dict:
    return {
        "cpu": device_name("cpu"),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bf16": cpu_supports_bf16(),
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
    }


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Achieved GFLOP/s of an ``n`` x ``n`` matrix product: the practical compute roof of this host."""
    a, b = torch.rand(n, n, dtype=dtype), torch.rand(n, n, dtype=dtype)
    ms = _median_ms(lambda: torch.mm(a, b), repeats)
    return round(2 * n**3 / ms / 1e6, 1)


def _reset_peak_rss() -> None:
    try:  # Linux: writing 5 resets VmHWM, so each case reports its own peak
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # Unix only: peak memory is reported where it exists

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, oneDNN primitive creation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def bench_inference(
    model: nn.Module, width: int, height: int, repeats: int = 3, compile: bool = False
) -> InferenceResult:
    """Time plain fp32 NCHW eager against the Upscaler's fast path on one input size."""
    model = model.eval()
    scale = model.scale
    x = torch.rand(1, model.in_channels, height, width)
    if model.upsampling == "pre":
        x = imresize(x, scale=scale).clamp(0, 1)
    flops = count_flops(model, x)
    out_mpix = width * height * scale * scale / 1e6

    def plain() -> None:
        with torch.no_grad():
            model(x)

    plain_ms = _median_ms(plain, repeats)
    fast = Upscaler(model, tile_size=10_000)  # one tile: compare like with like
    _reset_peak_rss()
    fast_ms = _median_ms(lambda: fast._forward(x), repeats)
    peak = _peak_rss_mb()
    compiled_ms = None
    if compile:  # the warm-up call of _median_ms pays the compilation
        compiled = Upscaler(model, tile_size=10_000, compile=True)
        compiled_ms = round(_median_ms(lambda: compiled._forward(x), repeats), 1)
    model.to(memory_format=torch.contiguous_format)
    return InferenceResult(
        model=getattr(model, "arch", "?"),
        scale=scale,
        input=f"{width}x{height}",
        plain_ms=round(plain_ms, 1),
        fast_ms=round(fast_ms, 1),
        speedup=round(plain_ms / fast_ms, 2),
        fast_mpix_per_s=round(out_mpix / fast_ms * 1000, 2),
        plain_mpix_per_s=round(out_mpix / plain_ms * 1000, 2),
        fast_gflops=round(flops / fast_ms / 1e6, 1),
        plain_gflops=round(flops / plain_ms / 1e6, 1),
        peak_rss_mb=round(peak, 0),
        precision=fast.precision,
        compiled_ms=compiled_ms,
    )


def psnr_delta(weights_name: str, dataset: str = "Set5") -> tuple[str, float]:
    """(fast precision, Set5 PSNR of the fast path minus fp32); negative = quality lost."""
    path = benchmark_path(dataset)
    fast_precision = pick_precision(resolve_device(), "auto")
    exact = evaluate(Upscaler(weights_name, precision="fp32").upscale, path, _scale_of(weights_name))
    fast = evaluate(Upscaler(weights_name, precision=fast_precision).upscale, path, _scale_of(weights_name))
    return fast_precision, fast.psnr - exact.psnr


def _scale_of(weights_name: str) -> int:
    return load_cached(weights_name)[1].scale


def _upscale_timed(
    arch: str,
    scale: int,
    width: int,
    height: int,
    tile: int | None,
    repeats: int,
    weights: str | None = None,
    backend: str = "torch",
    precision: str = "auto",
) -> dict:
    """One tiling case (run in a fresh process): best time of ``repeats`` after a warm-up, peak RSS;
    ``weights`` (a name) runs on ``backend``, else a fresh ``arch`` model on torch."""
    img = Image.effect_noise((width, height), 64).convert("RGB")
    if weights:
        up = Upscaler(weights, tile_size=tile, backend=backend, precision=precision)
    else:
        up = Upscaler(create_model(arch, scale).eval(), tile_size=tile)
    up.upscale(img.resize((width // 4, height // 4)))  # oneDNN primitives, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        up.upscale(img)
        times.append(time.perf_counter() - start)
    return {
        "s": round(min(times), 2),
        "peak_rss_mb": round(_peak_rss_mb()),
        "grid": "x".join(map(str, up.tile_grid(height, width))),
        "backend": f"{up.backend}/{up.precision}",
    }


def bench_tiling(
    arch: str = "edsr-baseline",
    scale: int = 4,
    width: int = 960,
    height: int = 540,
    repeats: int = 2,
    *,
    weights: str | None = None,
    backend: str = "torch",
    precision: str = "auto",
) -> dict:
    """Auto-tiled vs untiled upscale of a 4K-output image: wall time (best of ``repeats``, after a
    warm-up) and peak RSS of each, each in a fresh process (so the peak is the upscale's own).
    ``weights``: a weights name, run on ``backend`` in ``precision`` (``auto``: what its card chose here)."""
    import multiprocessing  # only the isolated-process measurement needs it

    result = {
        "model": weights or f"{arch}-x{scale}",
        "input": f"{width}x{height}",
        "output": f"{width * scale}x{height * scale}",
    }
    for label, tile in (("tiled", None), ("untiled", 100_000)):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            case = pool.submit(
                _upscale_timed, arch, scale, width, height, tile, repeats, weights, backend, precision
            ).result()
        result.update({f"{label}_{key}": value for key, value in case.items()})
    result["tiling_overhead"] = round(result["tiled_s"] / result["untiled_s"] - 1, 3)
    return result


def bench_training(steps: int = 4, batch: int = 16, patch: int = 48) -> dict:
    """it/s of one edsr-baseline x2 training step: fast (bf16 + channels_last) vs plain fp32."""
    results = {}
    for label, fast in (("plain", False), ("fast", True)):
        torch.manual_seed(0)
        model = create_model("edsr-baseline", 2)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        lr = torch.rand(batch, 3, patch, patch)
        hr = torch.rand(batch, 3, patch * 2, patch * 2)
        if fast:
            model = model.to(memory_format=torch.channels_last)
            lr = lr.contiguous(memory_format=torch.channels_last)
        use_bf16 = fast and cpu_supports_bf16()

        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                loss = nn.functional.l1_loss(model(lr).float(), hr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        results[f"{label}_it_per_s"] = round(steps / (time.perf_counter() - start), 3)
    results["speedup"] = round(results["fast_it_per_s"] / results["plain_it_per_s"], 2)
    results.update(model="edsr-baseline", scale=2, batch=batch, patch=patch)
    return results


class _TimedLogger:
    """The tracker's metric buffer with a stopwatch: the time training spends on tracking."""

    def __init__(self, buffer) -> None:
        self.buffer, self.seconds, self.loader_wait = buffer, 0.0, []

    def log(self, step: int, values: dict[str, float]) -> None:
        start = time.perf_counter()
        self.buffer.log(step, values)
        self.seconds += time.perf_counter() - start
        if "loader_wait" in values:
            self.loader_wait.append(values["loader_wait"])

    def resumed(self, step: int) -> None:  # a benchmark run starts fresh: never called
        raise AssertionError("bench training runs do not resume")

    def flush(self) -> None:
        start = time.perf_counter()
        self.buffer.flush()
        self.seconds += time.perf_counter() - start


def bench_pipeline(steps: int = 40, data: str = "General-100", batch: int = 16, patch: int = 48) -> dict:
    """The real trainer (edsr-baseline x2, real patches, tracked into a scratch SQLite database):
    the share of loop time spent waiting for the data loader and in metrics tracking."""

    try:
        benchmark_path(data)
    except (FileNotFoundError, ValueError):
        data = "sample"  # the packaged images, when General-100 is not beside the checkout
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        init_db(url)
        run_id = write_transaction(
            lambda s: create_run(s, name="bench", arch="edsr-baseline", scale=2, config={}, total_steps=steps).id,
            url=url,
        )
        cfg = TrainConfig(
            model="edsr-baseline",
            scale=2,
            data=data,
            val_data=None,
            batch_size=batch,
            patch_size=patch,
            iterations=steps,
            val_interval=10**9,
            ckpt_interval=10**9,
        )
        logger = _TimedLogger(MetricsBuffer(run_id, url=url))
        result = Trainer(cfg, Path(tmp) / "run", logger=logger, progress=False).train()
        dispose_engine(url)
    waits = logger.loader_wait[1:] or logger.loader_wait  # the first window includes warm-up
    return {
        "model": "edsr-baseline",
        "scale": 2,
        "batch": batch,
        "patch": patch,
        "data": data,
        "steps": steps,
        "it_per_s": round(steps / result.wall_seconds, 3),
        "loader_wait_share": round(statistics.mean(waits), 4),
        "tracking_share": round(logger.seconds / result.wall_seconds, 5),
    }


def run_bench(
    cases=DEFAULT_CASES,
    repeats: int = 3,
    training: bool = True,
    quality: bool = True,
    compile: bool = False,
    *,
    guards: dict[str, dict] | None = None,
    tiling_on: tuple[str, str, str] | None = None,
) -> dict:
    """The bench's report; ``guards``: quality entries measured already (by the backend contest, see
    :mod:`srweb.evaluation.backends_bench`), by weights name; ``tiling_on``: (weights, backend, precision)
    the tiling case runs, instead of a fresh edsr-baseline x4 on torch."""
    torch.manual_seed(0)
    report: dict = {
        "host": host_info(),
        "inference": [],
        "quality": [],
        "backends": [],
        "training": None,
        "pipeline": None,
        "tiling": None,
    }
    # The roofline: what a large matrix product reaches on this host, fp32 and (where fast) bf16.
    report["host"]["matmul_gflops"] = {
        "fp32": matmul_gflops(torch.float32),
        "bf16": matmul_gflops(torch.bfloat16) if cpu_supports_bf16() else None,
    }
    for arch, scale, w, h in cases:
        model = create_model(arch, scale) if arch in list_models() else load_weights(arch)[0]  # else an imported entry
        report["inference"].append({**asdict(bench_inference(model, w, h, repeats, compile)), "model": arch})
    if quality:
        for card in list_weights():
            if card.name in (guards or {}):
                report["quality"].append(guards[card.name])
                continue
            precision, delta = psnr_delta(card.name)
            report["quality"].append(
                {
                    "weights": card.name,
                    "precision": precision,
                    "psnr_delta_db": round(delta, 4),
                    "guard_db": QUALITY_GUARD_DB,
                }
            )
    if training:
        report["training"] = bench_training()
        report["pipeline"] = bench_pipeline()
        if tiling_on:
            weights, backend, precision = tiling_on
            report["tiling"] = bench_tiling(weights=weights, backend=backend, precision=precision)
        else:
            report["tiling"] = bench_tiling()
    return report


def record(report: dict) -> None:
    """Store ms per output megapixel of the fast path for every shipped entry (leaderboard speed).

    Each card gets its quality guard verdict and its speed (a fresh database starts with the
    card's speed: services.prepare_database), written once per card.
    """
    guards = {q["weights"]: q for q in report["quality"]}
    by_arch = {(r["model"], r["scale"]): r for r in report["inference"]}
    contests = {row["weights"]: row for row in report.get("backends") or []}
    init_db()
    host = report["host"]["cpu"]
    for card in list_weights():
        q, contest = guards.get(card.name), contests.get(card.name)
        r = by_arch.get((card.name, card.scale)) or by_arch.get((card.arch, card.scale))
        if q:  # the guard first: it decides which path is timed
            card.inference.update(
                guard_verdict(q["precision"], q["psnr_delta_db"], "Set5", resolve_device(), q["guard_db"])
            )
        if contest:
            card.inference.update(card_backends(contest, host))
        if r or (contest and contest["winner"]):
            ms, fast, backend = _stored_speed(card.inference, r, contest)
            write_transaction(
                lambda s, c=card, ms=ms, fast=fast, b=backend: record_speed(
                    s, weights_name=c.name, device="cpu", ms_per_mpix=ms, fast_path=fast, host=host, backend=b
                )
            )
            card.inference["speed"] = {
                "ms_per_mpix": ms,
                "fast_path": fast,
                "device": "cpu",
                "host": host,
                "backend": backend,
            }
        if q or r or contest:
            write_card(card, resolve_weights(card.name)[1])


def _stored_speed(inference: dict, case: dict | None, contest: dict | None) -> tuple[float, bool, str]:
    """(ms per output megapixel, fast path?, backend/precision) the Leaderboard gets for a card: its
    contest's winner (on the shipped weights), else torch's path on the architecture's case."""
    if contest and contest["winner"]:
        winner = contest["results"][contest["winner"]]
        return winner["ms_per_mpix"], contest["winner"] != "torch/fp32", contest["winner"]
    ms, fast = card_speed(inference, case)
    return ms, fast, f"torch/{inference.get('fast_precision', 'fp32') if fast else 'fp32'}"


def card_speed(inference: dict, case: dict) -> tuple[float, bool]:
    """Milliseconds per output megapixel of a card on its architecture's bench ``case``, and whether
    that is the fast path: a card whose quality guard failed runs (and is timed) in plain fp32."""
    fast = inference.get("fast_path_ok", True)
    return round(1000 / case["fast_mpix_per_s" if fast else "plain_mpix_per_s"], 2), fast


def leaderboard_cases(cases: tuple = DEFAULT_CASES) -> tuple:
    """``cases`` plus one per shipped (architecture, scale) they lack, at a 960x540 output, so that
    ``--store`` gives every shipped entry its Leaderboard speed."""
    have = {(arch, scale) for arch, scale, _, _ in cases}
    # An imported community model is timed as itself: one architecture spans sizes (ESRGAN 6 or 23 blocks).
    missing = sorted(
        {(card.arch if card.arch in list_models() else card.name, card.scale) for card in list_weights()} - have
    )
    return tuple(cases) + tuple((arch, scale, 960 // scale, 540 // scale) for arch, scale in missing)


def case_scale(model: str) -> int:
    """x4 for an architecture, a weights entry's own scale for its name (an imported model)."""
    return 4 if model in list_models() else int(read_card(resolve_weights(model)[1]).scale)
