"""``srweb bench``: speed of the fast path against plain fp32 eager, and the quality guards."""

from __future__ import annotations

import argparse
import json

# Handlers import the core when they run: `srweb --help` and argument errors stay fast (torch, gradio).


def cmd_bench(args: argparse.Namespace) -> int:
    from srweb.evaluation.backends_bench import format_rows, goal_lines, run_with_backends
    from srweb.evaluation.bench import DEFAULT_CASES, case_scale, leaderboard_cases, record

    cases = leaderboard_cases() if args.store else DEFAULT_CASES
    if args.models:  # the named ones among the cases; the others (an imported entry's name too) at 256x256
        matched = tuple(c for c in cases if c[0] in args.models)
        cases = matched + tuple(
            (m, case_scale(m), 256, 256) for m in dict.fromkeys(args.models) if m not in {c[0] for c in matched}
        )
    if args.quick:
        cases = tuple((m, s, max(32, w // 4), max(32, h // 4)) for m, s, w, h in cases)
    report = run_with_backends(
        cases,
        repeats=args.repeats,
        training=not args.no_training and not args.quick,
        quality=not args.no_quality,
        compile=args.compile,
        backends=not args.no_backends,
    )
    if args.store:
        record(report)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    host = report["host"]
    print(
        f"host: {host['cpu']}, {host['threads']} threads, torch {host['torch']}, bf16={host['bf16']}; "
        f"matmul roof {host['matmul_gflops']['fp32']} GFLOP/s fp32, {host['matmul_gflops']['bf16']} bf16"
    )
    if host.get("openvino_matmul_gflops"):
        roof = host["openvino_matmul_gflops"]
        print(f"OpenVINO matmul roof {roof['fp32']} GFLOP/s fp32, {roof['bf16']} bf16")
    print(
        f"{'model':<15}{'input':>10}{'plain ms':>10}{'fast ms':>10}{'speedup':>9}{'MP/s':>8}{'GFLOP/s':>16}{'peak MB':>9}"
    )
    for r in report["inference"]:
        print(
            f"{r['model']}-x{r['scale']:<{14 - len(r['model'])}}{r['input']:>10}{r['plain_ms']:>10}{r['fast_ms']:>10}"
            f"{r['speedup']:>8}x{r['fast_mpix_per_s']:>8}{str(r['plain_gflops']) + '->' + str(r['fast_gflops']):>16}"
            f"{r['peak_rss_mb']:>9.0f}"
        )
        if r["compiled_ms"]:
            print(f"  torch.compile: {r['compiled_ms']} ms ({r['plain_ms'] / r['compiled_ms']:.2f}x plain)")
    for line in format_rows(report["backends"]) + goal_lines(report["backends"], report.get("tiling")):
        print(line)
    for q in report["quality"]:
        ok = "ok" if q["psnr_delta_db"] >= -q["guard_db"] else "FAILS guard -> fp32"
        print(f"quality {q['weights']}: fast - fp32 = {q['psnr_delta_db']:+.4f} dB on Set5 ({ok})")
    if report["training"]:
        t = report["training"]
        print(
            f"training edsr-baseline x2 b{t['batch']} p{t['patch']}: plain {t['plain_it_per_s']} it/s, "
            f"fast {t['fast_it_per_s']} it/s ({t['speedup']}x)"
        )
    if report["pipeline"]:
        t = report["pipeline"]
        print(
            f"trainer edsr-baseline x2 b{t['batch']} p{t['patch']} on {t['data']}: {t['it_per_s']} it/s, loader wait "
            f"{t['loader_wait_share']:.1%} of step time, metrics tracking {t['tracking_share']:.2%}"
        )
    if report["tiling"]:
        t = report["tiling"]
        print(
            f"tiling {t['model']} ({t.get('tiled_backend', 'torch')}) {t['input']} -> {t['output']}: tiled {t['tiled_s']} s / "
            f"{t['tiled_peak_rss_mb']} MB peak (grid {t['tiled_grid']}), untiled {t['untiled_s']} s / "
            f"{t['untiled_peak_rss_mb']} MB, overhead {t['tiling_overhead']:+.1%}"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="speed of the fast path vs plain fp32 eager")
    p.add_argument("--json", action="store_true")
    p.add_argument("--models", nargs="+")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="small inputs, no training (for tests)")
    p.add_argument("--no-training", action="store_true")
    p.add_argument("--no-quality", action="store_true")
    p.add_argument(
        "--store",
        action="store_true",
        help="write the speeds and quality guards into the database and into every shipped card "
        "(inference block): for the host whose figures the cards should carry",
    )
    p.add_argument("--no-store", dest="store", action="store_false", help=argparse.SUPPRESS)  # the old default
    p.add_argument("--compile", action="store_true", help="also time the fast path under torch.compile")
    p.add_argument(
        "--no-backends",
        action="store_true",
        help="skip the backend contest (torch, OpenVINO, onnxruntime per shipped weights entry)",
    )
    p.set_defaults(func=cmd_bench)
