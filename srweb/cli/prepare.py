"""``srweb prepare SRC DST``: a folder of HR images into the DIV2K layout."""

from __future__ import annotations

import argparse

from srweb.cli.common import print_json

# Handlers import the core when they run: `srweb --help` and argument errors stay fast (torch, gradio).


def cmd_prepare(args: argparse.Namespace) -> int:
    from srweb.data.prepare import prepare_dataset

    summary = prepare_dataset(args.src, args.dst, scales=tuple(args.scales), split=args.split)
    print_json(summary) if args.json else print(summary)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="turn a folder of HR images into the DIV2K layout")
    p.add_argument("src", help="folder of HR images")
    p.add_argument("dst", help="output folder, DIV2K layout (DIV2K_<split>_HR, DIV2K_<split>_LR_bicubic/X<s>)")
    p.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4], help="LR scales to make (default 2 3 4)")
    p.add_argument("--split", default="train", choices=["train", "valid"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_prepare)
