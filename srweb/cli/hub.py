"""``srweb publish``: upload weights and their card to a Hugging Face Hub model repository."""

from __future__ import annotations

import argparse

# Handlers import the core when they run: `srweb --help` and argument errors stay fast (torch, gradio).


def cmd_publish(args: argparse.Namespace) -> int:
    from srweb.weights.sync import publish

    print(publish(args.weights, args.repo, private=args.private, token=args.token, onnx=args.onnx))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="upload weights and their card to a Hugging Face Hub model repository")
    p.add_argument("weights", help="weights name (shipped or exported) or path")
    p.add_argument("--repo", required=True, help="OWNER/NAME of the model repository (created when missing)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--onnx", action="store_true", help="also upload NAME.onnx (see srweb onnx)")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the token `hf auth login` saved)")
    p.set_defaults(func=cmd_publish)
