"""Read-only views of the tracker shaped for the UI: runs tables, metric curves, run details.

Each function opens its own read session (``url`` defaults to the settings' database) and
returns plain pandas / dict values, so the UI never runs SQL itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import pandas as pd

from srweb.track.db import session_scope
from srweb.track.runs import get_run, list_runs, metric_series
from srweb.track.schema import RUN_STATUSES, Run, utcnow

RUN_COLUMNS = (
    "id",
    "name",
    "model",
    "scale",
    "status",
    "best PSNR",
    "steps",
    "duration",
    "device",
    "worker",
    "created",
)
SORT_KEYS = ("created", "id", "name", "model", "scale", "status", "best PSNR", "steps", "duration")
ACTIVE_STATUSES = ("queued", "running")
CURVE_METRICS = ("loss", "val_psnr")


def _duration_seconds(run: Run, now: datetime) -> float | None:
    """Training time (pauses between a cancel and its resume left out); wall time since the start
    for runs recorded before the trainer reported its own."""
    if run.train_seconds is not None:
        return run.train_seconds
    if run.started_at is None:
        return None
    return max(0.0, ((run.finished_at or now) - run.started_at).total_seconds())


def format_duration(seconds: float | None) -> str:
    """``83.2`` -> ``"1:23"``; hours when needed (``"2:03:04"``); ``""`` for None."""
    if seconds is None or pd.isna(seconds):
        return ""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _row(run: Run, now: datetime) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "model": run.arch,
        "scale": run.scale,
        "status": run.status,
        "best PSNR": None if run.best_psnr is None else round(run.best_psnr, 2),
        "step": run.step or 0,
        "total": run.total_steps,
        "duration_s": _duration_seconds(run, now),
        "device": run.device or (run.config or {}).get("device") or "",
        "worker": run.worker or (run.host or "" if run.started_at else ""),  # no `srweb worker`: the machine
        "created_at": run.created_at,
    }


def runs_frame(
    *,
    status: str | Iterable[str] | None = None,
    model: str | None = None,
    scale: int | None = None,
    text: str | None = None,
    sort_by: str = "created",
    descending: bool = True,
    limit: int = 200,
    url: str | None = None,
) -> pd.DataFrame:
    """Runs as a display table with the columns :data:`RUN_COLUMNS`, filtered and sorted.

    ``text`` matches the run name (case-insensitive) or its id; ``sort_by`` is one of
    :data:`SORT_KEYS` and sorts on the raw value (duration in seconds, steps as a number)
    before formatting. Durations read ``M:SS``, steps ``done/total``, created ``YYYY-MM-DD HH:MM:SS`` UTC.

    Raises:
        ValueError: unknown status or sort key.
    """
    if sort_by not in SORT_KEYS:
        raise ValueError(f"sort_by must be one of {SORT_KEYS}, got {sort_by!r}")
    statuses = [status] if isinstance(status, str) else list(status or [])
    unknown = [s for s in statuses if s not in RUN_STATUSES]
    if unknown:
        raise ValueError(f"unknown status {unknown[0]!r}; expected one of {RUN_STATUSES}")
    now = utcnow()
    with session_scope(url, write=False) as session:
        runs = list_runs(session, status=statuses or None, arch=model or None, scale=scale or None, limit=None)
        rows = [_row(run, now) for run in runs]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    needle = (text or "").strip().lower()
    if needle:
        frame = frame[frame["name"].str.lower().str.contains(needle, regex=False) | (frame["id"].astype(str) == needle)]
    raw_key = {"created": "created_at", "steps": "step", "duration": "duration_s"}.get(sort_by, sort_by)
    frame = frame.sort_values([raw_key, "id"], ascending=not descending, na_position="last").head(limit)
    frame["steps"] = [f"{s}/{t}" if t else str(s) for s, t in zip(frame["step"], frame["total"])]
    frame["duration"] = frame["duration_s"].map(format_duration)
    frame["created"] = frame["created_at"].map(lambda t: t.strftime("%Y-%m-%d %H:%M:%S"))
    return frame[list(RUN_COLUMNS)].reset_index(drop=True)


def run_choices(*, limit: int = 100, url: str | None = None) -> list[tuple[str, int]]:
    """``(label, id)`` pairs for run pickers, newest first: ``"#12 espcn-x2_... (running)"``."""
    with session_scope(url, write=False) as session:
        return [(f"#{r.id} {r.name} ({r.status})", r.id) for r in list_runs(session, limit=limit)]


def active_run_ids(*, url: str | None = None) -> list[int]:
    """Ids of queued or running runs, oldest first."""
    with session_scope(url, write=False) as session:
        return sorted(r.id for r in list_runs(session, status=ACTIVE_STATUSES, limit=None))


def curves_frame(
    run_ids: Sequence[int], metrics: Iterable[str] = CURVE_METRICS, *, url: str | None = None
) -> pd.DataFrame:
    """Long-form metric curves of several runs: columns ``run_id, run, step, name, value``.

    ``run`` is a label (``"#id name"``) for legends; rows with a NULL value (NaN) are dropped.
    """
    names = list(metrics)
    frames = []
    with session_scope(url, write=False) as session:
        for run_id in dict.fromkeys(int(r) for r in run_ids):
            run = get_run(session, run_id)
            if run is None:
                continue
            series = metric_series(session, run_id, names).dropna(subset=["value"])
            frames.append(series.assign(run_id=run_id, run=f"#{run_id} {run.name}"))
    if not frames:
        return pd.DataFrame(columns=["run_id", "run", "step", "name", "value"])
    return pd.concat(frames, ignore_index=True)[["run_id", "run", "step", "name", "value"]]


def run_details(run_id: int, *, url: str | None = None) -> dict[str, Any]:
    """Summary and full config of one run as JSON-ready values.

    Raises:
        KeyError: no such run.
    """
    with session_scope(url, write=False) as session:
        run = get_run(session, int(run_id))
        if run is None:
            raise KeyError(f"no run with id {run_id}")
        stamp = lambda t: t.isoformat(timespec="seconds") if t else None  # noqa: E731
        return {
            "id": run.id,
            "name": run.name,
            "model": run.arch,
            "scale": run.scale,
            "status": run.status,
            "step": run.step,
            "total_steps": run.total_steps,
            "best_psnr": run.best_psnr,
            "error": run.error,
            "device": run.device,
            "weights_name": run.weights_name,
            "run_dir": run.run_dir,
            "created": stamp(run.created_at),
            "started": stamp(run.started_at),
            "finished": stamp(run.finished_at),
            "git_commit": run.git_commit,
            "resumed_from": run.resumed_from,
            "parent_run": run.parent_id,
            "config": dict(run.config or {}),
        }


def workers_markdown(*, url: str | None = None) -> str:
    """One line on the training workers: with PostgreSQL, each ``srweb worker`` alive (name, host,
    device, the run it trains, its last heartbeat); with SQLite, that this machine trains queued runs."""
    from srweb.track.workers import alive_workers
    from srweb.train.queue import uses_queue

    if not uses_queue(url):
        return "**Workers:** this machine trains queued runs itself (SQLite database)."
    now = utcnow()
    with session_scope(url, write=False) as session:
        alive = [
            (w.name, w.host, w.device or "?", w.run_id, (now - w.heartbeat_at).total_seconds())
            for w in alive_workers(session)
        ]
    if not alive:
        return "**Workers:** none alive; queued runs wait for a `srweb worker` to start."
    parts = [
        f"`{name}` ({host}, {device}) {f'training run {run}' if run else 'idle'}, seen {age:.0f} s ago"
        for name, host, device, run, age in alive
    ]
    return f"**Workers alive ({len(alive)}):** " + "; ".join(parts)
