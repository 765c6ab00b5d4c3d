"""Evaluations (PSNR/SSIM with their protocol) and speed results of weights entries.

Repository functions take a Session and never commit: callers own the transaction.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from srweb.track.schema import EVAL_SOURCES, Evaluation, SpeedResult, other_checkpoint, utcnow
from srweb.weights.names import arch_and_scale

PROTOCOL_KEYS = ("channel", "crop_border", "degradation")
DEFAULT_DEGRADATION = "matlab-bicubic"


def _protocol(protocol: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    missing = [key for key in PROTOCOL_KEYS if key not in protocol]
    if missing:
        raise ValueError(f"protocol is missing {missing}; it needs {PROTOCOL_KEYS}")
    return {**protocol, "dataset": dataset}


def record_evaluation(
    session: Session,
    result: Any | None = None,
    *,
    weights_name: str,
    arch: str | None = None,
    scale: int | None = None,
    dataset: str | None = None,
    psnr: float | None = None,
    ssim: float | None = None,
    protocol: Mapping[str, Any] | None = None,
    per_image: list[dict[str, Any]] | None = None,
    num_params: int | None = None,
    source: str = "eval",
    weights_sha256: str | None = None,
) -> Evaluation:
    """Store one evaluation result.

    Args:
        result: optional ``srweb.evaluation.evaluate.EvalResult`` (anything with ``dataset, scale, protocol,
            psnr, ssim, images``) supplying the fields not given as keywords.
        weights_name: the weights entry (``ARCH-xS.TAG``) or baseline (``bicubic``) evaluated.
        arch: defaults to the ARCH part of ``weights_name`` (the whole name for baselines).
        protocol: must hold ``channel`` (e.g. ``"y"``), ``crop_border`` and ``degradation``;
            ``dataset`` is set to ``dataset``.
        per_image: optional rows such as ``{"image": "baby.png", "psnr": ..., "ssim": ...}``.
        num_params: the model's parameter count (from its card); the leaderboard shows it.
        source: ``"eval"`` for a measurement, ``"card"`` for a number copied from a weights card.
        weights_sha256: the checkpoint measured (its card's sha256), so results of an earlier
            checkpoint under the same name are not taken for the current one's.
    """
    if result is not None:
        scale = result.scale if scale is None else scale
        dataset = result.dataset if dataset is None else dataset
        psnr = result.psnr if psnr is None else psnr
        ssim = result.ssim if ssim is None else ssim
        protocol = result.protocol if protocol is None else protocol
        per_image = getattr(result, "images", None) if per_image is None else per_image
    missing = [
        key
        for key, value in (("scale", scale), ("dataset", dataset), ("psnr", psnr), ("protocol", protocol))
        if value is None
    ]
    if missing:
        raise TypeError(f"record_evaluation needs {', '.join(missing)} (as keywords or from result)")
    if source not in EVAL_SOURCES:
        raise ValueError(f"source must be one of {EVAL_SOURCES}, got {source!r}")
    if math.isnan(float(psnr)):
        raise ValueError("psnr is NaN")
    evaluation = Evaluation(
        weights_name=weights_name,
        arch=arch or _arch_of(weights_name),
        scale=int(scale),
        dataset=dataset,
        protocol=_protocol(protocol, dataset),
        psnr=float(psnr),
        ssim=None if ssim is None or math.isnan(float(ssim)) else float(ssim),
        per_image=_json_safe(per_image),
        num_params=num_params,
        source=source,
        weights_sha256=weights_sha256,
        created_at=utcnow(),
    )
    session.add(evaluation)
    session.flush()
    return evaluation


def _arch_of(weights_name: str) -> str:
    parsed = arch_and_scale(weights_name)
    return parsed[0] if parsed else weights_name


def _json_safe(value: Any) -> Any:
    """Non-finite floats become None: JSON has no inf/NaN (a perfect image has infinite PSNR)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def best_evaluations(
    session: Session,
    *,
    scale: int | None = None,
    dataset: str | None = None,
    weights_name: str | None = None,
    channel: str | None = None,
    versions: Mapping[str, str | None] | None = None,
    degradation: str = DEFAULT_DEGRADATION,
) -> list[Evaluation]:
    """The highest-PSNR evaluation per (weights, dataset, scale), newest first on ties.

    Only results whose LR was made by ``degradation`` (the protocol's; default the classic MATLAB
    bicubic, e.g. ``"matlab-bicubic+jpeg75"`` for ``srweb eval --degradation jpeg75``) are taken, so
    scores on degraded inputs never outrank or hide the classic ones.

    ``versions`` (weights name -> sha256 of its current checkpoint) skips results of other
    checkpoints of those names; results whose checkpoint was not recorded are kept.

    ``channel`` (e.g. ``"y"``) keeps only results measured on that channel, so Y and RGB
    numbers are never ranked together. Sorted by scale, dataset, then PSNR descending.
    """
    query = select(Evaluation)
    if scale is not None:
        query = query.where(Evaluation.scale == scale)
    if dataset is not None:
        query = query.where(Evaluation.dataset == dataset)
    if weights_name is not None:
        query = query.where(Evaluation.weights_name == weights_name)
    query = query.order_by(Evaluation.psnr.desc(), Evaluation.created_at.desc(), Evaluation.id.desc())
    best: dict[tuple[str, str, int], Evaluation] = {}
    for evaluation in session.scalars(query):
        if channel is not None and str(evaluation.protocol.get("channel", "")).lower() != channel.lower():
            continue
        if degradation_of(evaluation.protocol) != degradation:
            continue
        if other_checkpoint(evaluation.weights_sha256, (versions or {}).get(evaluation.weights_name)):
            continue
        best.setdefault((evaluation.weights_name, evaluation.dataset, evaluation.scale), evaluation)
    return sorted(best.values(), key=lambda e: (e.scale, e.dataset, -e.psnr))


def degradation_of(protocol: Mapping[str, Any]) -> str:
    """How the LR of a stored result was made (rows from before the field: the classic MATLAB bicubic)."""
    return str(protocol.get("degradation") or DEFAULT_DEGRADATION)


def _card_dict(card: Any) -> dict[str, Any]:
    if isinstance(card, Mapping):
        return dict(card)
    if hasattr(card, "to_dict"):
        return card.to_dict()
    raise TypeError(f"expected a card dict or WeightsCard, got {type(card).__name__}")


def _card_metrics(card: dict[str, Any]) -> list[dict[str, Any]]:
    metrics = card.get("metrics") or []
    if isinstance(metrics, Mapping):  # {"Set5": {"psnr": ..}} as well as [{"dataset": "Set5", ..}]
        metrics = [{"dataset": name, **entry} for name, entry in metrics.items()]
    return [dict(entry) for entry in metrics if entry.get("dataset") and entry.get("psnr") is not None]


def seed_from_cards(session: Session, cards: Iterable[Mapping[str, Any] | Any]) -> int:
    """Copy the metrics of weights cards into evaluations with ``source="card"``; idempotent.

    A card is a dict (or ``WeightsCard``) with ``name, arch, scale, num_params`` and ``metrics``:
    a list of ``{"dataset", "psnr", "ssim", "protocol": {...}}`` (protocol keys may also sit at
    the top level of the entry). Missing protocol keys default to the project's protocol: Y
    channel, ``crop_border = scale``, MATLAB bicubic degradation. One card row is kept per
    (weights, dataset, scale, degradation); it is updated when the card changes. Returns rows inserted or updated.
    """
    existing = {  # a card may hold one row per LR degradation (clean, jpeg75) of a dataset
        (e.weights_name, e.dataset, e.scale, degradation_of(e.protocol)): e
        for e in session.scalars(select(Evaluation).where(Evaluation.source == "card"))
    }
    changed = 0
    for raw in cards:
        card = _card_dict(raw)
        scale = int(card["scale"])
        for entry in _card_metrics(card):
            dataset = str(entry["dataset"])
            protocol = {
                "channel": "y",
                "crop_border": scale,
                "degradation": DEFAULT_DEGRADATION,
                **{key: entry[key] for key in PROTOCOL_KEYS if key in entry},
                **dict(entry.get("protocol") or {}),
                "dataset": dataset,
            }
            values = {
                "arch": card["arch"],
                "protocol": protocol,
                "psnr": float(entry["psnr"]),
                "ssim": None if entry.get("ssim") is None else float(entry["ssim"]),
                "num_params": card.get("num_params"),
                "weights_sha256": card.get("sha256") or None,
            }
            key = (card["name"], dataset, scale, degradation_of(protocol))
            row = existing.get(key)
            if row is None:
                row = Evaluation(
                    weights_name=card["name"],
                    scale=scale,
                    dataset=dataset,
                    source="card",
                    created_at=utcnow(),
                    **values,
                )
                session.add(row)
                existing[key] = row
                changed += 1
            elif any(getattr(row, key) != value for key, value in values.items()):
                for key, value in values.items():
                    setattr(row, key, value)
                changed += 1
    session.flush()
    return changed


def forget_missing_cards(session: Session, names: Iterable[str]) -> int:
    """Delete the card rows (``source="card"``) of weights not in ``names``: their card is gone,
    so the figure it held is no longer anyone's. Measured evaluations stay. Returns rows deleted."""
    keep = set(names)
    rows = [
        row
        for row in session.scalars(select(Evaluation).where(Evaluation.source == "card"))
        if row.weights_name not in keep
    ]
    for row in rows:
        session.delete(row)
    session.flush()
    return len(rows)


def seed_speeds_from_cards(session: Session, cards: Iterable[Mapping[str, Any] | Any]) -> int:
    """Store the speed a card carries (``inference.speed``, written by ``srweb bench``) for weights
    with no speed on that device yet, so a fresh Leaderboard shows one: the host it was measured
    on says where. A speed measured here is never replaced. Returns rows inserted."""
    known = {(name, device) for name, device in session.execute(select(SpeedResult.weights_name, SpeedResult.device))}
    added = 0
    for raw in cards:
        card = _card_dict(raw)
        speed = (card.get("inference") or {}).get("speed")
        # a hand-edited card's malformed speed is skipped: it must not stop the app's start
        usable = (
            isinstance(speed, Mapping)
            and isinstance(speed.get("device"), str)
            and isinstance(speed.get("ms_per_mpix"), (int, float))
            and speed["ms_per_mpix"] > 0
        )
        if not usable or (card["name"], speed["device"]) in known:
            continue
        record_speed(
            session,
            weights_name=card["name"],
            device=speed["device"],
            ms_per_mpix=speed["ms_per_mpix"],
            fast_path=speed.get("fast_path", False),
            host=speed.get("host"),
            backend=speed.get("backend"),
        )
        known.add((card["name"], speed["device"]))
        added += 1
    return added


def record_speed(
    session: Session,
    *,
    weights_name: str,
    device: str,
    ms_per_mpix: float,
    fast_path: bool = False,
    host: str | None = None,
    backend: str | None = None,
) -> SpeedResult:
    """Store a speed measurement: milliseconds per output megapixel on ``device``, with the backend
    and precision that ran (``openvino/bf16``; None: torch, as before backends)."""
    result = SpeedResult(
        backend=backend,
        weights_name=weights_name,
        device=device,
        host=host or socket.gethostname(),
        ms_per_mpix=float(ms_per_mpix),
        fast_path=bool(fast_path),
        created_at=utcnow(),
    )
    session.add(result)
    session.flush()
    return result
