"""``srweb import``: a community SR model file (any architecture spandrel's core detects) as user weights."""

from __future__ import annotations

import argparse

# Handlers import the core when they run: `srweb --help` and argument errors stay fast (torch, spandrel).


def cmd_import(args: argparse.Namespace) -> int:
    from srweb.weights.importer import import_model

    card = import_model(args.file, name=args.name, source=args.source, license=args.license)
    cfg = card.config
    exact = "" if cfg.get("radius_exact") else " (inexact: tiles may differ faintly from the whole image)"
    print(
        f"imported {card.name}: {card.arch} x{card.scale}, {cfg['in_channels']} channels in, "
        f"{card.num_params:,} parameters, tile overlap {cfg['receptive_radius']} px{exact}"
    )
    if not (args.license or "").strip():
        print("note: no --license given; you are responsible for the terms of these weights")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="import a community SR model file (.pth/.pt/.ckpt/.safetensors, any "
        "architecture spandrel detects) as user weights",
    )
    p.add_argument("file", help="model file, or hf://OWNER/REPO/FILE on the Hugging Face Hub")
    p.add_argument("--name", help="weights name (default: ARCH-xSCALE.FILESTEM)")
    p.add_argument("--source", help="where the weights come from (URL), kept in the card")
    p.add_argument("--license", help="the weights' licence, kept in the card (you are responsible for it)")
    p.set_defaults(func=cmd_import)
