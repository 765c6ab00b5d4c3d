"""``srweb compare``: side-by-side crops of several models on one image."""

from __future__ import annotations

import argparse
from pathlib import Path

from srweb.evaluation.compare import MAX_ZOOM

# Handlers import the core when they run: `srweb --help` and argument errors stay fast (torch, gradio).


def cmd_compare(args: argparse.Namespace) -> int:
    from srweb.evaluation.compare import side_by_side

    x, y, size = args.crop
    if Path(args.out).is_dir() or Path(args.out).suffix.lower() != ".png":
        raise ValueError(f"--out {args.out}: give the path of a .png file to write")
    figure = side_by_side(args.image, args.scale, args.weights, (x, y, size), zoom=args.zoom)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(out)
    print(out)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="side-by-side crops of several models on one image")
    p.add_argument("--image", required=True, help="HR image (degraded by MATLAB bicubic, as in evaluation)")
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--weights", nargs="+", required=True, help="weights names or paths, or bicubic")
    p.add_argument("--crop", type=int, nargs=3, required=True, metavar=("X", "Y", "SIZE"), help="HR pixels")
    p.add_argument("--zoom", type=int, default=2, help=f"enlarge the crops this many times (1 to {MAX_ZOOM})")
    p.add_argument("--out", required=True, help="PNG to write")
    p.set_defaults(func=cmd_compare)
