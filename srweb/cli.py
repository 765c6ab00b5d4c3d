"""Command line: ``srweb models | upscale | eval | prepare | train | jobs | bench | compare``.

On bad input every command exits non-zero with one clear line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

EXIT_BAD_INPUT = 2


class CLIError(Exception):
    """A user error reported as one line."""


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_models(args: argparse.Namespace) -> int:
    from srweb.models import create_model, get_model_info, list_models
    from srweb.weights import count_params, list_weights, weights_source

    archs = []
    for name in list_models():
        info = get_model_info(name)
        params = {str(s): count_params(create_model(name, s)) for s in info.scales} if args.json or info.trainable else {}
        archs.append({
            "name": name, "paper": info.paper, "year": info.year, "input_kind": info.input_kind,
            "upsampling": info.upsampling, "scales": list(info.scales), "trainable": info.trainable,
            "params": params, "defaults": info.defaults, "paper_set5": info.paper_set5,
        })
    found = [(card, weights_source(card.name)) for card in list_weights()]
    if args.markdown:
        print(_weights_markdown([card for card, source in found if source == "shipped"]))
        return 0
    cards = [{**card.to_dict(), "source": source} for card, source in found]
    if args.json:
        _print_json({"architectures": archs, "weights": cards})
        return 0
    params = {a["name"]: " / ".join(f"{int(v):,}" for v in a["params"].values()) or "-" for a in archs}
    width = max(len("params (x2/x3/x4)"), *map(len, params.values())) + 2
    print(f"{'architecture':<15}{'input':<7}{'upsampling':<12}{'params (x2/x3/x4)':<{width}}paper")
    for a in archs:
        year = str(a["year"] or "")
        paper = a["paper"] if year in a["paper"] else f"{a['paper']} ({year})"  # the year once, if known
        print(f"{a['name']:<15}{a['input_kind']:<7}{a['upsampling']:<12}{params[a['name']]:<{width}}{paper}")
    print(f"\n{'weights':<34}{'scale':<7}{'params':>12}  {'Set5 PSNR/SSIM':<18}source")
    for c in cards:
        set5 = next((m for m in c["metrics"] if str(m.get("dataset", "")).lower() == "set5"), None)
        score = f"{set5['psnr']:.2f} / {set5['ssim']:.4f}" if set5 else "-"
        print(f"{c['name']:<34}x{c['scale']:<6}{c['num_params']:>12,}  {score:<18}{c['source']}")
    return 0


def _weights_markdown(cards: list) -> str:
    """The README's shipped-weights table, with bicubic measured on Set5 when it is present."""
    from srweb.data.samples import benchmark_path
    from srweb.evaluate import bicubic_sr, evaluate
    from srweb.models import list_models
    from srweb.weights_table import markdown_table

    order = {name: i for i, name in enumerate(list_models())}  # papers in order, SRGAN after SRResNet
    cards = sorted(cards, key=lambda c: (order.get(c.arch, len(order)), c.scale, c.name.startswith("srgan")))
    try:
        set5 = benchmark_path("Set5")
    except ValueError:
        return markdown_table(cards)
    return markdown_table(cards, {s: evaluate(bicubic_sr(s), set5, s).psnr for s in sorted({c.scale for c in cards})})


def _collect_inputs(inputs: Sequence[str]) -> list[Path]:
    from srweb.imaging import is_image_file

    files: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p))
            if not found:
                print(f"srweb: warning: {path}: no image files", file=sys.stderr)
            files.extend(found)
        else:
            files.append(path)
    return files


def cmd_upscale(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from srweb.config import get_settings
    from srweb.inference import Upscaler, upscale_files

    upscaler = Upscaler(args.weights, args.scale, device=args.device, precision=args.precision,
                        tile_size=args.tile, self_ensemble=args.self_ensemble, output_scale=args.outscale,
                        backend=args.backend)
    files = _collect_inputs(args.inputs)
    if not files:
        raise CLIError("no input images")
    failures = 0
    factor = upscaler.output_scale or upscaler.scale
    outcomes = upscale_files(files, upscaler, args.out, max_pixels=get_settings().max_input_pixels)
    for outcome in tqdm(outcomes, total=len(files), desc=f"upscale x{factor:g}", unit="img",
                        disable=args.quiet or len(files) < 2):
        if outcome.error:
            failures += 1
            tqdm.write(f"srweb: error: {outcome.error}", file=sys.stderr)
        elif not args.quiet:
            tqdm.write(f"{outcome.source} -> {outcome.target} ({outcome.seconds:.2f}s)")
    return 1 if failures else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from srweb.data.samples import benchmark_path
    from srweb.evaluate import bicubic_sr, evaluate
    from srweb.inference import Upscaler
    from srweb.weights import ENSEMBLE_SUFFIX

    dataset = benchmark_path(args.dataset)
    if args.weights == "bicubic":
        if args.self_ensemble:
            raise CLIError("--self-ensemble needs a model: bicubic gives the same image for every flip")
        sr_fn, name, scale, params, sha = bicubic_sr(args.scale), "bicubic", args.scale, 0, None
    else:
        upscaler = Upscaler(args.weights, args.scale, device=args.device, precision=args.precision,
                            self_ensemble=args.self_ensemble, backend=args.backend)
        sr_fn, name, scale = upscaler.upscale, upscaler.name, upscaler.scale
        params = upscaler.card.num_params if upscaler.card else None
        sha = upscaler.card.sha256 if upscaler.card else None
    result = evaluate(sr_fn, dataset, scale, name=dataset.name, progress=not args.json)
    if name.endswith(ENSEMBLE_SUFFIX):  # --self-ensemble, or weights given as NAME+
        result.protocol["self_ensemble"] = True
    if args.store:
        from srweb.track.db import init_db, write_transaction
        from srweb.track.evals import record_evaluation

        init_db()
        write_transaction(lambda s: record_evaluation(s, result, weights_name=name, num_params=params,
                                                      weights_sha256=sha))
    if args.json:
        _print_json({"weights": name, **result.to_dict()})
    else:
        for row in result.images:
            print(f"{row['image']:<24}{row['psnr']:8.3f} dB  {row['ssim']:.4f}")
        print(f"{name} x{scale} on {result.dataset}: PSNR {result.psnr:.3f} dB, SSIM {result.ssim:.4f} "
              f"(Y channel, crop border {scale}, MATLAB bicubic LR)")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from srweb.data.prepare import prepare_dataset

    summary = prepare_dataset(args.src, args.dst, scales=tuple(args.scales), split=args.split)
    _print_json(summary) if args.json else print(summary)
    return 0


BACKEND_CHOICES = ["auto", "torch", "openvino", "onnxruntime"]  # srweb.backends.BACKENDS and auto
SELF_ENSEMBLE_HELP = "average over the 8 flips and rotations of the input (8x the time, higher PSNR)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srweb", description="Super-resolution studio")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list architectures and weights (shipped, and exported from runs)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--markdown", action="store_true",
                   help="the shipped weights as a Markdown table (training chain, Set5, paper, bicubic)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("upscale", help="upscale image files or folders")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("--weights", required=True, help="weights name, .safetensors path, or bicubic/nearest")
    p.add_argument("--scale", type=int, help="upscaling factor (default: the weights' own scale)")
    p.add_argument("--out", required=True, help="output folder (writes <stem>.png)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: the fastest the weights' card allows on the device (default)")
    p.add_argument("--backend", choices=BACKEND_CHOICES,
                   help="what runs the network; default SRWEB_BACKEND, else auto: the winner `srweb bench --store` "
                        "recorded for this processor")
    p.add_argument("--tile", type=int, help="input tile size in pixels (default or 0: automatic)")
    p.add_argument("--self-ensemble", action="store_true", help=SELF_ENSEMBLE_HELP)
    p.add_argument("--outscale", type=float, metavar="F",
                   help="output size factor when it is not the model's, e.g. 3.5 or 8 with a x4 model: the SR "
                        "result is resized to it with MATLAB bicubic (default: the model's scale)")
    p.add_argument("--quiet", action="store_true", help="no per-file lines or progress bar")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("eval", help="PSNR/SSIM under the classic SR protocol")
    p.add_argument("--weights", required=True, help="weights name or path, or bicubic")
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--dataset", required=True, help="HR folder, or a benchmark name (Set5, sample)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"],
                   help="fp32 (default) gives the figures cards and papers quote")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="torch",
                   help="what runs the network (default torch, as the cards' figures were measured)")
    p.add_argument("--self-ensemble", action="store_true",
                   help=SELF_ENSEMBLE_HELP + "; recorded as its own entry, NAME+")
    p.add_argument("--no-store", dest="store", action="store_false", help="do not record in the database")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("prepare", help="turn a folder of HR images into the DIV2K layout")
    p.add_argument("src", help="folder of HR images")
    p.add_argument("dst", help="output folder, DIV2K layout (DIV2K_<split>_HR, DIV2K_<split>_LR_bicubic/X<s>)")
    p.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4], help="LR scales to make (default 2 3 4)")
    p.add_argument("--split", default="train", choices=["train", "valid"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_prepare)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list:
    """Commands that live next to the code they drive (training, jobs, benchmarks, figures)."""
    registrars = []
    for module, attr in (("srweb.train.cli", "register"), ("srweb.bench", "register"), ("srweb.compare", "register"),
                        ("srweb.hub", "register"), ("srweb.onnx_export", "register")):
        try:
            mod = __import__(module, fromlist=[attr])
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("srweb"):
                continue
            raise
        registrars.append(getattr(mod, attr))
    return registrars


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from srweb.config import apply_threads
        from srweb.data.folders import show_warnings_as_lines

        apply_threads()
        show_warnings_as_lines()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("srweb: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"srweb: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # the last line of defence: one line, no traceback
        print(f"srweb: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
