"""The ``workers`` table: each ``srweb worker`` registers, heartbeats and says which run it trains."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from srweb.track.schema import Worker, utcnow

ALIVE_SECONDS = 30.0
"""A worker whose last heartbeat is older than this is not listed as alive."""


def register_worker(session: Session, name: str, *, host: str, device: str | None, gpus: int, pid: int) -> Worker:
    """Insert or refresh the row of worker ``name`` (a restarted worker keeps its name)."""
    worker = session.get(Worker, name) or Worker(name=name)
    now = utcnow()
    worker.host, worker.device, worker.gpus, worker.pid = host, device, gpus, pid
    worker.run_id, worker.started_at, worker.heartbeat_at, worker.stopped_at = None, now, now, None
    session.add(worker)
    session.flush()
    return worker


def worker_heartbeat(session: Session, name: str, run_id: int | None) -> None:
    """Stamp ``name``'s heartbeat and the run it trains now (None: idle)."""
    worker = session.get(Worker, name)
    if worker is not None:
        worker.heartbeat_at, worker.run_id = utcnow(), run_id


def unregister_worker(session: Session, name: str) -> None:
    """Mark ``name`` stopped (its row stays: the Runs tab still names it on the runs it trained)."""
    worker = session.get(Worker, name)
    if worker is not None:
        worker.stopped_at, worker.run_id = utcnow(), None


def alive_workers(session: Session, *, within: float = ALIVE_SECONDS) -> list[Worker]:
    """Workers not stopped whose heartbeat is younger than ``within`` seconds, by name."""
    since = utcnow() - timedelta(seconds=within)
    query = select(Worker).where(Worker.stopped_at.is_(None), Worker.heartbeat_at >= since).order_by(Worker.name)
    return list(session.scalars(query))


def worker_rows(session: Session) -> list[dict]:
    """:func:`alive_workers` as plain dicts (JSON, tables): name, host, device, gpus, run, heartbeat."""
    return [
        {
            "name": w.name,
            "host": w.host,
            "device": w.device,
            "gpus": w.gpus,
            "run_id": w.run_id,
            "heartbeat_at": w.heartbeat_at.isoformat(timespec="seconds"),
            "started_at": w.started_at.isoformat(timespec="seconds"),
        }
        for w in alive_workers(session)
    ]
