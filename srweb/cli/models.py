"""``srweb models``: architectures and weights (table, ``--json``, ``--markdown``)."""

from __future__ import annotations

import argparse

from srweb.cli.common import print_json

# Handlers import the core when they run: `srweb --help` and argument errors stay fast (torch, gradio).


def cmd_models(args: argparse.Namespace) -> int:
    from srweb.models import create_model, get_model_info, list_models
    from srweb.weights.files import count_params, list_weights, weights_source

    archs = []
    for name in list_models():
        info = get_model_info(name)
        params = (
            {str(s): count_params(create_model(name, s)) for s in info.scales} if args.json or info.trainable else {}
        )
        archs.append(
            {
                "name": name,
                "paper": info.paper,
                "year": info.year,
                "input_kind": info.input_kind,
                "upsampling": info.upsampling,
                "scales": list(info.scales),
                "trainable": info.trainable,
                "params": params,
                "defaults": info.defaults,
                "paper_set5": info.paper_set5,
            }
        )
    found = [(card, weights_source(card.name)) for card in list_weights()]
    if args.markdown:
        print(_weights_markdown([card for card, source in found if source == "shipped"]))
        return 0
    cards = [{**card.to_dict(), "source": source} for card, source in found]
    if args.json:
        print_json({"architectures": archs, "weights": cards})
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
    from srweb.evaluation.evaluate import bicubic_sr, evaluate
    from srweb.models import list_models
    from srweb.weights.table import markdown_table

    order = {name: i for i, name in enumerate(list_models())}  # papers in order, SRGAN after SRResNet
    cards = sorted(cards, key=lambda c: (order.get(c.arch, len(order)), c.scale, c.name.startswith("srgan")))
    try:
        set5 = benchmark_path("Set5")
    except ValueError:
        return markdown_table(cards)
    scales = sorted({c.scale for c in cards})
    return markdown_table(
        cards,
        {s: evaluate(bicubic_sr(s), set5, s).psnr for s in scales},
        {s: evaluate(bicubic_sr(s), set5, s, degradation="jpeg75").psnr for s in scales},
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list architectures and weights (shipped, and exported from runs)")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--markdown",
        action="store_true",
        help="the shipped weights as a Markdown table (training chain, Set5, paper, bicubic)",
    )
    p.set_defaults(func=cmd_models)
