"""The shipped-weights table of the README: each card's training chain, wall time and Set5 scores
next to its paper's figure and bicubic (``srweb models --markdown``)."""

from __future__ import annotations

from srweb.models import get_model_info
from srweb.weights.files import WeightsCard

# Ledig et al., Table 1 (Set5 x4): SRGAN's content losses; the generator is SRResNet.
SRGAN_PAPER_SET5 = {"srgan-mse": 30.64, "srgan-vgg54": 29.40}


def _arch_paper_psnr(arch: str, scale: int) -> float | None:
    try:
        return get_model_info(arch).paper_set5.get(int(scale))
    except (ValueError, TypeError):  # not a registered architecture (e.g. the "hr" reference row)
        return None


def paper_psnr(card: WeightsCard) -> float | None:
    """The paper's Set5 PSNR for the card's architecture, scale and (for SRGAN) loss."""
    loss = ((card.training or {}).get("config") or {}).get("loss")
    if loss in SRGAN_PAPER_SET5:
        return SRGAN_PAPER_SET5[loss] if card.scale == 4 else None
    return _arch_paper_psnr(card.arch, card.scale)


def paper_psnr_of(weights: str, arch: str, scale: int, cards: dict[str, WeightsCard]) -> float | None:
    """:func:`paper_psnr` for a leaderboard row: from its card when there is one, else its architecture."""
    return paper_psnr(cards[weights]) if weights in cards else _arch_paper_psnr(arch, scale)


def training_summary(card: WeightsCard) -> tuple[str, float]:
    """``"4,000 General-100 + 20,000 sample"`` (iterations and data per stage, oldest first) and the
    chain's total wall time in seconds."""
    chain = card.training_chain()
    stages = " + ".join(f"{stage.get('iterations', 0):,} {stage.get('data') or stage['config'].get('data')}"
                        + (f" (teacher {stage['teacher']['name']})" if stage.get("teacher") else "")
                        + (f" ({stage['config'].get('degradation', 'degraded')} LR)"
                           if stage["config"].get("degradation_config") else "")
                        for stage in chain)
    return stages or "-", sum(float(stage.get("wall_seconds") or 0) for stage in chain)


JPEG75 = "matlab-bicubic+jpeg75"  # the protocol of `srweb eval --degradation jpeg75`


def _db(value: float | None) -> str:
    return f"{value:.2f}" if value else "-"


def markdown_table(cards: list[WeightsCard], bicubic: dict[int, float] | None = None,
                   bicubic_jpeg75: dict[int, float] | None = None) -> str:
    """A Markdown table of ``cards``: what each is for, training chain, wall time, Set5 PSNR/SSIM,
    Set5 PSNR on JPEG-75 LR, paper, bicubic (clean / JPEG-75)."""
    bicubic, bicubic_jpeg75 = bicubic or {}, bicubic_jpeg75 or {}
    rows = ["| weights | for | training (iterations, data) | wall time | Set5 PSNR / SSIM | Set5 JPEG-75 PSNR | "
            "paper PSNR | bicubic (clean / JPEG-75) |",
            "|---|---|---|---|---|---|---|---|"]
    for card in cards:
        stages, seconds = training_summary(card)
        set5, jpeg = card.metric("Set5"), card.metric("Set5", JPEG75)
        score = f"{set5['psnr']:.2f} / {set5['ssim']:.4f}" if set5 else "-"
        paper = None if card.for_photos else paper_psnr(card)
        base = f"{_db(bicubic.get(card.scale))} / {_db(bicubic_jpeg75.get(card.scale))}"
        rows.append(f"| {card.name} | {'photos/JPEG' if card.for_photos else 'paper'} | {stages} | "
                    f"{seconds / 60:.0f} min | {score} | {_db(jpeg['psnr'] if jpeg else None)} | {_db(paper)} | "
                    f"{base} |")
    return "\n".join(rows)


def _stage_line(i: int, stage: dict) -> str:
    cfg = stage.get("config") or {}
    data = stage.get("data") or cfg.get("data") or "?"
    minutes = float(stage.get("wall_seconds") or 0) / 60
    recipe = ", ".join(f"{label} {cfg[key]}" for key, label in (
        ("lr", "lr"), ("batch_size", "batch"), ("patch_size", "patch"), ("loss", "loss"), ("schedule", "schedule"),
        ("ema", "EMA"), ("teacher", "teacher")) if cfg.get(key) not in (None, "", 0))
    if cfg.get("teacher"):
        recipe += f" weighted {cfg.get('teacher_weight', 0.5):g}" + (", also labelling the images as LR inputs"
                                                                    if cfg.get("teacher_unlabelled") else "")
    if cfg.get("degradation_config"):
        recipe += f", LR degraded: {cfg.get('degradation', 'custom')} preset"
    where = " ".join(str(stage[k]) for k in ("device", "precision") if stage.get(k))
    return (f"{i}. {stage.get('iterations', 0):,} iterations on {data} ({recipe})"
            f"{f', {where}' if where else ''}, {minutes:.0f} min")


def _speed_path(inference: dict, speed: dict) -> str:
    """What ran when the card's speed was measured: ``openvino/bf16``, or (a card from before
    backends) torch in the guard's precision."""
    if speed.get("backend"):
        return speed["backend"]
    fast = inference.get("fast_precision") if speed.get("fast_path", True) else "fp32"
    return f"torch/{fast or 'fp32'}"


def card_markdown(card: WeightsCard, card_path: str | None = None) -> str:
    """What a user picking these weights wants to know, as Markdown: architecture and size, Set5
    scores beside the paper's, speed, how they were trained (each stage) and how to train them again."""
    lines = [f"**{card.name}** · {card.arch} x{card.scale} · {card.num_params:,} parameters · "
             f"{card.input_kind.upper()} input"]
    set5, paper = card.metric("Set5"), paper_psnr(card)
    if set5:
        lines.append(f"Set5 (Y, shave {card.scale}): {set5['psnr']:.2f} dB / SSIM {set5['ssim']:.4f}"
                     f"{f' · paper {paper:.2f} dB' if paper and not card.for_photos else ''}")
    jpeg = card.metric("Set5", JPEG75)
    if jpeg:
        lines.append(f"Set5 with JPEG-75 LR (`srweb eval --degradation jpeg75`): {jpeg['psnr']:.2f} dB / "
                     f"SSIM {jpeg['ssim']:.4f}")
    if card.for_photos:
        lines.append("For photos and JPEGs: trained on LR with JPEG artefacts (see the last stage below).")
    speed = (card.inference or {}).get("speed") or {}
    if speed.get("ms_per_mpix"):
        lines.append(f"Speed: {speed['ms_per_mpix']:,.0f} ms per output megapixel on {speed.get('device', '?')}"
                     f" ({speed.get('host', '?')}, {_speed_path(card.inference, speed)})")
    chain = card.training_chain()
    if chain:
        total = sum(float(stage.get("wall_seconds") or 0) for stage in chain) / 60
        lines.append(f"Trained in {len(chain)} stage{'s' if len(chain) > 1 else ''}, {total:.0f} min in all:\n\n"
                     + "\n".join(_stage_line(i + 1, stage) for i, stage in enumerate(chain)))
        if card_path:
            lines.append(f"Train it again: `srweb train --from-card {card_path}`")
    imported = (card.training or {}).get("imported")
    if isinstance(imported, dict):
        source = f" ({imported['source']})" if imported.get("source") else ""
        licence = imported.get("license") or "not stated (whoever imported it answers for its terms)"
        lines.append(f"Imported {str(imported.get('imported', ''))[:10]} from `{imported.get('file', '?')}`"
                     f"{source} · licence: {licence}")
    elif card.notes:
        lines.append(f"Notes: {card.notes}")
    return "\n\n".join(lines)
