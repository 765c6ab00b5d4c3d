"""The leaderboard: fidelity, speed and crowd ratings of every weights entry in one table.

A pure function of the database: parameter counts come from ``Evaluation.num_params`` (copied
from the weights cards by ``evals.seed_from_cards`` or given to ``evals.record_evaluation``),
with an optional ``params`` callable as a fallback for entries that have no evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from srweb.track.evals import DEFAULT_DEGRADATION, best_evaluations
from srweb.track.ratings import REFERENCE_ENTRIES, TRIAL_INPUTS, rating_stats
from srweb.track.schema import Evaluation, SpeedResult
from srweb.weights.names import arch_and_scale

RATING_COLUMNS = [
    "mos",
    "mos_lo",
    "mos_hi",
    "n_ratings",
    "n_raters",
    "win_rate",
    "win_lo",
    "win_hi",
    "bt",
    "bt_lo",
    "bt_hi",
]
INPUT_MOS_COLUMNS = [f"{kind}_{trial_input}" for trial_input in TRIAL_INPUTS for kind in ("mos", "n")]
"""MOS and vote count per trial kind: trials upscaled from the clean LR, and from it saved as JPEG-75."""
JPEG75 = f"{DEFAULT_DEGRADATION}+jpeg75"  # srweb.data.degradations.describe(eval_config("jpeg75"))


def protocol_label(protocol: dict[str, Any]) -> str:
    """Short text for a protocol, e.g. ``"Y, crop 4, matlab-bicubic"`` (``", x8 self-ensemble"`` after it)."""
    channel = str(protocol.get("channel", "?"))
    return (
        f"{channel.upper() if len(channel) == 1 else channel}, crop {protocol.get('crop_border', '?')}, "
        f"{protocol.get('degradation', '?')}" + (", x8 self-ensemble" if protocol.get("self_ensemble") else "")
    )


def _parse_name(name: str) -> tuple[str, int | None]:
    return arch_and_scale(name) or (name, None)


def _latest_speed(session: Session, device: str | None) -> dict[str, SpeedResult]:
    query = select(SpeedResult).order_by(SpeedResult.created_at, SpeedResult.id)
    if device is not None:
        query = query.where(SpeedResult.device == device)
    return {result.weights_name: result for result in session.scalars(query)}


def leaderboard(
    session: Session,
    scale: int | None = None,
    dataset: str | None = None,
    *,
    device: str | None = None,
    channel: str | None = None,
    params: Callable[[str], int | None] | None = None,
    n_boot: int = 200,
    seed: int = 0,
    versions: Mapping[str, str | None] | None = None,
) -> pd.DataFrame:
    """One row per weights entry x scale, with reference rows (bicubic, nearest, hr) when rated.

    Columns: ``weights, kind ("model"|"reference"), arch, scale, params``; for each dataset D:
    ``psnr_D, jpeg75_D, ssim_D, protocol_D`` (best result per weights/dataset/scale; ``jpeg75_D`` is the
    PSNR with LR saved as JPEG quality 75, ``srweb eval --degradation jpeg75``); ``ms_per_mpix,
    speed_device, fast_path, speed_backend`` (latest speed result, on ``device`` if given); then the rating
    columns of :func:`srweb.track.ratings.rating_stats` (``mos, mos_lo, mos_hi, n_ratings,
    n_raters, win_rate, win_lo, win_hi, bt, bt_lo, bt_hi``).

    Args:
        scale, dataset: keep only that scale / that dataset's columns.
        device: speed results from this device only.
        channel: PSNR/SSIM measured on this channel only (e.g. ``"y"``).
        params: fallback parameter count for a weights name without ``num_params`` stored.
        n_boot, seed: bootstrap of the Bradley-Terry intervals.
        versions: weights name -> sha256 of its current checkpoint: results and votes of other
            checkpoints under those names are left out.

    Sorted by scale, then PSNR on the main dataset (``dataset``, else Set5, else the first) descending.
    """
    evaluations = best_evaluations(session, scale=scale, dataset=dataset, channel=channel, versions=versions)
    num_params = _recorded_params(session)
    ratings = rating_stats(session, scale=scale, n_boot=n_boot, seed=seed, versions=versions)
    speeds = _latest_speed(session, device)

    rows: dict[tuple[str, int], dict[str, Any]] = {}

    def row(weights: str, s: int, arch: str | None = None) -> dict[str, Any]:
        entry = rows.get((weights, s))
        if entry is None:
            entry = rows[(weights, s)] = {
                "weights": weights,
                "kind": "reference" if weights in REFERENCE_ENTRIES else "model",
                "arch": arch or _parse_name(weights)[0],
                "scale": s,
            }
        return entry

    for evaluation in evaluations:
        entry = row(evaluation.weights_name, evaluation.scale, evaluation.arch)
        entry[f"psnr_{evaluation.dataset}"] = evaluation.psnr
        entry[f"ssim_{evaluation.dataset}"] = evaluation.ssim
        entry[f"protocol_{evaluation.dataset}"] = protocol_label(evaluation.protocol)
    for record in ratings.to_dict("records"):
        row(record["entry"], record["scale"]).update({column: record[column] for column in RATING_COLUMNS})
    degraded = best_evaluations(
        session, scale=scale, dataset=dataset, channel=channel, versions=versions, degradation=JPEG75
    )
    _add_photo_columns(session, row, degraded, scale=scale, seed=seed, versions=versions)
    for name in speeds:
        parsed_scale = _parse_name(name)[1]
        if parsed_scale is not None and (scale is None or parsed_scale == scale):
            row(name, parsed_scale)
    for entry in rows.values():
        count = num_params.get(entry["weights"])
        entry["params"] = count if count is not None else (params(entry["weights"]) if params else None)
        speed = speeds.get(entry["weights"])
        entry["ms_per_mpix"] = speed.ms_per_mpix if speed else math.nan
        entry["speed_device"] = speed.device if speed else None
        entry["fast_path"] = speed.fast_path if speed else None
        entry["speed_backend"] = speed.backend if speed else None

    datasets = sorted({e.dataset for e in evaluations + degraded}, key=lambda d: (d.lower() != "set5", d.lower()))
    return _as_frame(list(rows.values()), [dataset] if dataset is not None else datasets)


def _add_photo_columns(
    session: Session,
    row: Callable[..., dict[str, Any]],
    degraded: list[Evaluation],
    *,
    scale: int | None,
    seed: int,
    versions: Mapping[str, str | None] | None,
) -> None:
    """``jpeg75_D`` (PSNR on JPEG-75 LR, beside the clean one) and the MOS per trial kind
    (``mos_clean``/``n_clean``, ``mos_jpeg75``/``n_jpeg75``) into the rows ``row`` makes."""
    for evaluation in degraded:
        row(evaluation.weights_name, evaluation.scale, evaluation.arch)[f"jpeg75_{evaluation.dataset}"] = (
            evaluation.psnr
        )
    for trial_input in TRIAL_INPUTS:  # MOS only: no Bradley-Terry bootstrap needed
        per_input = rating_stats(session, scale=scale, n_boot=1, seed=seed, versions=versions, trial_input=trial_input)
        for record in per_input.to_dict("records"):
            row(record["entry"], record["scale"]).update(
                {f"mos_{trial_input}": record["mos"], f"n_{trial_input}": record["n_ratings"]}
            )


def _recorded_params(session: Session) -> dict[str, int]:
    """Weights name -> the parameter count its evaluations recorded (the largest, if several)."""
    num_params: dict[str, int] = {}
    for name, count in session.execute(
        select(Evaluation.weights_name, Evaluation.num_params).where(Evaluation.num_params.is_not(None))
    ):
        num_params[name] = max(count, num_params.get(name, 0))
    return num_params


def _as_frame(rows: list[dict[str, Any]], datasets: list[str]) -> pd.DataFrame:
    """The leaderboard's typed columns, sorted by scale, then PSNR on ``datasets[0]``, then Bradley-Terry."""
    metric_columns = [f"{kind}_{d}" for d in datasets for kind in ("psnr", "jpeg75", "ssim", "protocol")]
    columns = [
        "weights",
        "kind",
        "arch",
        "scale",
        "params",
        *metric_columns,
        "ms_per_mpix",
        "speed_device",
        "fast_path",
        "speed_backend",
        *RATING_COLUMNS,
        *INPUT_MOS_COLUMNS,
    ]
    frame = pd.DataFrame(rows, columns=columns)
    for column in RATING_COLUMNS + INPUT_MOS_COLUMNS + [c for c in metric_columns if not c.startswith("protocol_")]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in ("n_ratings", "n_raters", *(c for c in INPUT_MOS_COLUMNS if c.startswith("n_"))):
        frame[column] = frame[column].fillna(0).astype(int)
    frame["params"] = frame["params"].astype("Int64")
    sort_by = ["scale"] + ([f"psnr_{datasets[0]}"] if datasets else []) + ["bt"]
    ascending = [True] + [False] * (len(sort_by) - 1)
    frame = frame.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable")
    return frame.reset_index(drop=True)
