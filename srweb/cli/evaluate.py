"""``srweb eval``: PSNR/SSIM under the classic SR protocol, recorded in the database."""

from __future__ import annotations

import argparse

from srweb.cli.common import BACKEND_CHOICES, SELF_ENSEMBLE_HELP, CLIError, print_json

# Handlers import the core when they run: `srweb --help` and argument errors stay fast (torch, gradio).


def _lr_words(protocol: dict) -> str:
    degradation = protocol.get("degradation", "matlab-bicubic")
    if degradation == "matlab-bicubic":
        return "MATLAB bicubic LR"
    return f"LR {degradation.replace('matlab-bicubic+', 'MATLAB bicubic + ')}, fixed seed"


def cmd_eval(args: argparse.Namespace) -> int:
    from srweb.data.samples import benchmark_path
    from srweb.evaluation.evaluate import bicubic_sr, evaluate
    from srweb.inference.upscaler import Upscaler
    from srweb.weights.files import ENSEMBLE_SUFFIX

    dataset = benchmark_path(args.dataset)
    if args.weights == "bicubic":
        if args.self_ensemble:
            raise CLIError("--self-ensemble needs a model: bicubic gives the same image for every flip")
        sr_fn, name, scale, params, sha, arch = bicubic_sr(args.scale), "bicubic", args.scale, 0, None, None
    else:
        upscaler = Upscaler(
            args.weights,
            args.scale,
            device=args.device,
            precision=args.precision,
            self_ensemble=args.self_ensemble,
            backend=args.backend,
        )
        sr_fn, name, scale = upscaler.upscale, upscaler.name, upscaler.scale
        params = upscaler.card.num_params if upscaler.card else None
        sha = upscaler.card.sha256 if upscaler.card else None
        arch = upscaler.card.arch if upscaler.card else None  # an imported entry's name does not say it
    result = evaluate(sr_fn, dataset, scale, name=dataset.name, progress=not args.json, degradation=args.degradation)
    if name.endswith(ENSEMBLE_SUFFIX):  # --self-ensemble, or weights given as NAME+
        result.protocol["self_ensemble"] = True
    if args.store:
        from srweb.track.db import init_db, write_transaction
        from srweb.track.evals import record_evaluation

        init_db()
        write_transaction(
            lambda s: record_evaluation(s, result, weights_name=name, num_params=params, weights_sha256=sha, arch=arch)
        )
    if args.json:
        print_json({"weights": name, **result.to_dict()})
    else:
        for row in result.images:
            print(f"{row['image']:<24}{row['psnr']:8.3f} dB  {row['ssim']:.4f}")
        print(
            f"{name} x{scale} on {result.dataset}: PSNR {result.psnr:.3f} dB, SSIM {result.ssim:.4f} "
            f"(Y channel, crop border {scale}, {_lr_words(result.protocol)})"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="PSNR/SSIM under the classic SR protocol")
    p.add_argument("--weights", required=True, help="weights name or path, or bicubic")
    p.add_argument("--scale", type=int, required=True)
    p.add_argument(
        "--dataset",
        required=True,
        help="HR folder, or a dataset name: Set5 (built in), sample, or one `srweb data list` shows",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="fp32 (default) gives the figures cards and papers quote",
    )
    p.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="torch",
        help="what runs the network (default torch, as the cards' figures were measured)",
    )
    p.add_argument(
        "--self-ensemble", action="store_true", help=SELF_ENSEMBLE_HELP + "; recorded as its own entry, NAME+"
    )
    p.add_argument("--no-store", dest="store", action="store_false", help="do not record in the database")
    p.add_argument(
        "--degradation",
        default="bicubic",
        choices=["bicubic", "jpeg75", "jpeg50", "noise15", "realistic"],
        metavar="NAME",
        help="make the LR as photos are damaged before upscaling it: jpeg75, jpeg50 "
        "(MATLAB bicubic, then Pillow JPEG), noise15 (Gaussian sigma 15), realistic "
        "(Real-ESRGAN's chain); fixed seeds, scored as its own protocol",
    )
    p.set_defaults(func=cmd_eval)
