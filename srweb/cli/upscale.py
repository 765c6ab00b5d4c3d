"""``srweb upscale INPUT... --weights NAME --out DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from srweb.cli.common import BACKEND_CHOICES, SELF_ENSEMBLE_HELP, CLIError

# Handlers import the core when they run: `srweb --help` and argument errors stay fast (torch, gradio).


def _collect_inputs(inputs: Sequence[str]) -> list[Path]:
    from srweb.imaging.io import is_image_file

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
    from srweb.inference.upscaler import Upscaler, upscale_files

    upscaler = Upscaler(
        args.weights,
        args.scale,
        device=args.device,
        precision=args.precision,
        tile_size=args.tile,
        self_ensemble=args.self_ensemble,
        output_scale=args.outscale,
        backend=args.backend,
    )
    files = _collect_inputs(args.inputs)
    if not files:
        raise CLIError("no input images")
    failures = 0
    factor = upscaler.output_scale or upscaler.scale
    outcomes = upscale_files(files, upscaler, args.out, max_pixels=get_settings().max_input_pixels)
    for outcome in tqdm(
        outcomes, total=len(files), desc=f"upscale x{factor:g}", unit="img", disable=args.quiet or len(files) < 2
    ):
        if outcome.error:
            failures += 1
            tqdm.write(f"srweb: error: {outcome.error}", file=sys.stderr)
        elif not args.quiet:
            tqdm.write(f"{outcome.source} -> {outcome.target} ({outcome.seconds:.2f}s)")
    return 1 if failures else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upscale", help="upscale image files or folders")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("--weights", required=True, help="weights name, .safetensors path, or bicubic/nearest")
    p.add_argument("--scale", type=int, help="upscaling factor (default: the weights' own scale)")
    p.add_argument("--out", required=True, help="output folder (writes <stem>.png)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="auto: the fastest the weights' card allows on the device (default)",
    )
    p.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        help="what runs the network; default SRWEB_BACKEND, else auto: the winner `srweb bench --store` "
        "recorded for this processor",
    )
    p.add_argument("--tile", type=int, help="input tile size in pixels (default or 0: automatic)")
    p.add_argument("--self-ensemble", action="store_true", help=SELF_ENSEMBLE_HELP)
    p.add_argument(
        "--outscale",
        type=float,
        metavar="F",
        help="output size factor when it is not the model's, e.g. 3.5 or 8 with a x4 model: the SR "
        "result is resized to it with MATLAB bicubic (default: the model's scale)",
    )
    p.add_argument("--quiet", action="store_true", help="no per-file lines or progress bar")
    p.set_defaults(func=cmd_upscale)
