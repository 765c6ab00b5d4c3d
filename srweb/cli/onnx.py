"""``srweb onnx``: export weights to ONNX, checked with onnxruntime."""

from __future__ import annotations

import argparse

# Handlers import the core when they run: `srweb --help` and argument errors stay fast (torch, gradio).


def cmd_onnx(args: argparse.Namespace) -> int:
    from srweb.weights.onnx import export_onnx, metadata

    path, difference, card = export_onnx(args.weights, args.out, opset=args.opset)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB; onnxruntime matches PyTorch within {difference:.1g})")
    for key, value in metadata(card).items():
        print(f"  {key.removeprefix('srweb.')}: {value}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("onnx", help="export weights to ONNX (dynamic batch and size), checked with onnxruntime")
    p.add_argument("weights", help="weights name (shipped or exported), path or hf:// reference")
    p.add_argument("-o", "--out", help="the .onnx file to write, or a folder for NAME.onnx (default: NAME.onnx here)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.set_defaults(func=cmd_onnx)
