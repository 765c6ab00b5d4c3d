"""``srweb worker``: trains queued runs on this machine, taken from the PostgreSQL queue.

Each worker claims one run at a time from procrastinate's ``training`` queue (:mod:`srweb.train.queue`),
pulls the run's folder from the artifact store (:mod:`srweb.artifacts`) so it resumes from the last
checkpoint whichever machine wrote it, trains it in a child process (``python -m srweb.train.worker``,
or torchrun with ``--gpus N``), pushes new checkpoints while it trains, and heartbeats into the
``workers`` table. Cancel (procrastinate's abort, polled every second) and SIGTERM both stop the
child after a checkpoint: a cancelled run is ``cancelled``, a run stopped by SIGTERM goes back to the
queue. Every worker also returns the runs of stalled workers (no heartbeat for
:data:`STALLED_AFTER_S`; e.g. SIGKILLed, powered off) to the queue. A worker that cannot reach the
database or the store says so in one line and retries with backoff; it never marks a run failed
for that.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from srweb.artifacts import ArtifactError, Pusher, pull
from srweb.config import get_settings
from srweb.track.db import init_db, write_transaction
from srweb.track.runs import get_run, set_status
from srweb.track.schema import Checkpoint, utcnow
from srweb.track.workers import register_worker, unregister_worker, worker_heartbeat
from srweb.train import queue

HEARTBEAT_S = 2.0
TORCHRUN = (
    "import runpy; from srweb.train.worker import die_with_parent; die_with_parent(); "
    "runpy.run_module('torch.distributed.run', run_name='__main__', alter_sys=True)"
)
STALLED_AFTER_S = 10.0
"""A procrastinate worker silent this long is taken for dead and its job goes back to the queue."""
POLL_S = 1.0
PUSH_EVERY_S = 5.0
MAX_BACKOFF_S = 30.0


@dataclass
class WorkerState:
    name: str
    gpus: int
    device: str
    run_id: int | None = None
    lost: bool = False  # the run was given to another worker while this one could not be reached


_state: WorkerState | None = None


def say(message: str) -> None:
    print(f"srweb worker {_state.name if _state else ''}: {message}".replace("  ", " "), flush=True)


def unreachable(exc: BaseException) -> bool:
    """The database or the artifact store did not answer (as opposed to a bug or bad data)."""
    import psycopg
    from procrastinate.exceptions import ConnectorException

    from srweb.track.db import is_connection_error

    return is_connection_error(exc) or isinstance(exc, (psycopg.OperationalError, ConnectorException, OSError))


def retry_forever(what: str, fn, stop: threading.Event | None = None):
    """``fn()`` until it works while the database or the store is unreachable (:func:`unreachable`);
    each failure is one line, then a wait that doubles up to 30 s. Other errors propagate."""
    delay = 1.0
    while True:
        try:
            return fn()
        except Exception as exc:  # filtered just below: only "not reachable" is waited out
            if not unreachable(exc):
                raise
            say(
                f"cannot reach {what} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                f"retrying in {delay:.0f} s"
            )
            if stop is not None and stop.wait(delay):
                return None
            if stop is None:
                time.sleep(delay)
            delay = min(MAX_BACKOFF_S, delay * 2)


# --- one run --------------------------------------------------------------------------------------


def _claim(session, run_id: int, worker: str) -> str | None:
    """Mark run ``run_id`` running on ``worker`` if it is still queued; its folder in the store, or None."""
    from srweb.track.schema import Run

    run = session.get(Run, run_id, with_for_update=True)
    if run is None or run.status != "queued":
        return None
    set_status(session, run_id, "running", host=socket.gethostname())
    run.worker, run.pid, run.error = worker, None, None
    return run.run_dir


def _spawn(run_id: int, local: Path, gpus: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "srweb.train.worker", str(run_id), str(local)]
    if gpus > 1:  # one process per GPU under DDP (torchrun, made to die with this worker); RANK/WORLD_SIZE
        command = [
            sys.executable,
            "-c",
            TORCHRUN,
            "--standalone",
            f"--nproc-per-node={gpus}",
            "-m",
            "srweb.train.worker",
            str(run_id),
            str(local),
        ]
    # SRWEB_PARENT_PID: the trainer dies with this worker (srweb.train.worker.die_with_parent), as
    # both would when the machine goes away.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SRWEB_PARENT_PID": str(os.getpid())}
    with open(local / "train.log", "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def _push(pusher: Pusher) -> None:
    try:
        pusher.push()
    except ArtifactError as exc:
        say(f"{exc}; pushing again later")


def _watch(child: subprocess.Popen, context, pusher: Pusher) -> str | None:
    """Wait for the child; on abort SIGTERM it (it checkpoints and stops). Returns why it was
    stopped: ``shutdown`` (this worker stops), ``cancel`` (the user cancelled), or None."""
    from procrastinate.job_context import AbortReason

    reason, last_push = None, time.monotonic()
    while child.poll() is None:
        if _state.lost:  # another worker trains it now: stop at once, write nothing more
            say(f"run {_state.run_id} was given to another worker while this one was unreachable; dropping it")
            child.kill()
            return "lost"
        if reason is None and context.should_abort():
            reason = "shutdown" if context.abort_reason() == AbortReason.SHUTDOWN else "cancel"
            say(f"run {_state.run_id}: {reason}; stopping after a checkpoint")
            child.send_signal(signal.SIGTERM)
        if time.monotonic() - last_push >= PUSH_EVERY_S:
            _push(pusher)
            last_push = time.monotonic()
        time.sleep(POLL_S)
    if reason is None and context.should_abort():  # the stop arrived as the child ended (SIGTERM to the group)
        reason = "shutdown" if context.abort_reason() == AbortReason.SHUTDOWN else "cancel"
    return reason


def _relocate_checkpoints(session, run_id: int, local: Path, location: str) -> None:
    """Checkpoint rows point into the store, not into this worker's local copy."""
    from sqlalchemy import select

    for row in session.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id)):
        if row.path.startswith(str(local)):
            row.path = location + row.path[len(str(local)) :]


def _after(session, run_id: int, code: int, reason: str | None) -> str:
    """Settle the run once the child has ended; returns its status."""
    run = get_run(session, run_id)
    # A child that stopped as cancelled though no cancel was asked of it got its SIGTERM from outside
    # (this worker's process group or machine stopping): like a shutdown, another worker continues it.
    stopped_from_outside = reason is None and run.status == "cancelled"
    if (reason == "shutdown" or stopped_from_outside) and run.status in ("cancelled", "running"):
        run.status, run.finished_at, run.pid = "queued", None, None  # another worker continues it
    elif run.status == "running":  # the child ended without recording an outcome
        set_status(session, run_id, "failed", error=f"training process ended with code {code}")
    return run.status


def train_job(context, run_id: int) -> None:
    """The ``train_run`` task: claim, pull, train, push, settle (see the module docstring)."""
    state = _state
    location = retry_forever("the database", lambda: write_transaction(lambda s: _claim(s, run_id, state.name)))
    if location is None:
        say(f"run {run_id} is no longer queued; skipped")
        return
    local = get_settings().runs_dir.resolve() / Path(location).name
    retry_forever("the artifact store", lambda: pull(location, local))
    state.run_id = run_id
    resumes = (local / "last.pt").is_file()
    say(f"run {run_id}: {'resuming from its last checkpoint' if resumes else 'training'} in {local}")
    pusher = Pusher(local, location)
    child = _spawn(run_id, local, state.gpus)
    try:
        reason = _watch(child, context, pusher)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    if reason == "lost":
        state.run_id, state.lost = None, False
        return
    retry_forever("the artifact store", pusher.push)
    status = retry_forever(
        "the database",
        lambda: write_transaction(
            lambda s: (_relocate_checkpoints(s, run_id, local, location), _after(s, run_id, child.returncode, reason))[
                1
            ]
        ),
    )
    state.run_id = None
    say(f"run {run_id}: {status}")
    if status == "queued":
        retry_forever("the database", lambda: queue.defer_run(run_id))


# --- the worker process ---------------------------------------------------------------------------


async def _stalled_jobs(app) -> list:
    """Jobs of procrastinate workers silent for STALLED_AFTER_S (and those workers forgotten)."""
    async with app.open_async():
        stalled = list(
            await app.job_manager.get_stalled_jobs(queue=queue.QUEUE, seconds_since_heartbeat=STALLED_AFTER_S)
        )
        await app.job_manager.prune_stalled_workers(seconds_since_heartbeat=STALLED_AFTER_S)
    return stalled


async def _retry(app, jobs: list) -> None:
    async with app.open_async():
        for job in jobs:
            await app.job_manager.retry_job(job)


def _requeue(session, run_ids: list[int]) -> list[int]:
    """Of the runs of stalled jobs, those to hand to another worker: set back to ``queued`` when
    still running with their own heartbeat (stamped by the trainer on its own connection) silent
    too; runs that ended need no worker either (their job is retried, and skipped). A run whose
    trainer still heartbeats is left alone: its worker is only slow to answer."""
    stale = utcnow() - timedelta(seconds=STALLED_AFTER_S)
    chosen = []
    for run_id in run_ids:
        run = get_run(session, run_id)
        if run is None or run.status != "running":
            chosen.append(run_id)
        elif run.heartbeat_at is None or run.heartbeat_at < stale:
            run.status, run.pid, run.error = "queued", None, None
            chosen.append(run_id)
    return chosen


def recover_stalled() -> list[int]:
    """Return the runs of stalled workers to the queue (any worker may do it; it is idempotent).
    Returns the run ids whose jobs went back to the queue."""
    app = queue.make_app()
    stalled = asyncio.run(_stalled_jobs(app))
    if not stalled:
        return []
    by_run = {int(job.task_kwargs["run_id"]): job for job in stalled}
    chosen = write_transaction(lambda s: _requeue(s, list(by_run)))
    asyncio.run(_retry(app, [by_run[run_id] for run_id in chosen]))
    for run_id in chosen:
        say(f"run {run_id}: its worker stopped answering; back in the queue")
    return chosen


def _still_mine(session) -> None:
    """Notice when the run this worker trains was given to another one (this worker was taken
    for dead while it could not reach the database)."""
    run_id = _state.run_id
    if run_id is not None:
        run = get_run(session, run_id)
        if run is None or run.worker != _state.name or run.status not in ("running",):
            _state.lost = _state.run_id == run_id and (run is None or run.worker != _state.name)


def _side_loop(stop: threading.Event) -> None:
    """Heartbeat into ``workers`` every HEARTBEAT_S and recover stalled runs; failures: one line, backoff."""
    delay, last_ok = HEARTBEAT_S, True
    while not stop.wait(delay):
        try:
            write_transaction(lambda s: worker_heartbeat(s, _state.name, _state.run_id))
            write_transaction(_still_mine)
            recover_stalled()
            delay, last_ok = HEARTBEAT_S, True
        except Exception as exc:
            delay = min(MAX_BACKOFF_S, delay * 2) if not last_ok else HEARTBEAT_S
            say(f"cannot reach the database ({type(exc).__name__}); retrying in {delay:.0f} s")
            last_ok = False


def _startup(name: str, gpus: int) -> None:
    init_db()
    queue.ensure_schema()
    write_transaction(
        lambda s: register_worker(s, name, host=socket.gethostname(), device=_state.device, gpus=gpus, pid=os.getpid())
    )


class _OneLine(logging.Formatter):
    """procrastinate's and psycopg's warnings as one line each (no traceback): the worker's log
    says what happened, it does not scroll away."""

    def format(self, record: logging.LogRecord) -> str:
        detail = f": {type(record.exc_info[1]).__name__}: {record.exc_info[1]}" if record.exc_info else ""
        text = f"srweb worker {_state.name if _state else ''}: {record.name}: {record.getMessage()}{detail}"
        return " ".join(text.split())


def _quiet_libraries() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_OneLine())
    for name, level in (("procrastinate", logging.WARNING), ("psycopg", logging.ERROR)):  # psycopg: each retry
        lib = logging.getLogger(name)
        lib.handlers[:] = [handler]
        lib.setLevel(level)
        lib.propagate = False


def run(name: str | None = None, gpus: int = 1) -> int:
    """Run a worker until SIGTERM/SIGINT; returns the exit code."""
    from srweb.config import resolve_device

    global _state
    if not queue.uses_queue():
        raise ValueError(
            "srweb worker needs a PostgreSQL database (SRWEB_DATABASE_URL=postgresql+psycopg://...); "
            "with SQLite the app trains queued runs itself"
        )
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    _state = WorkerState(name=name, gpus=max(1, gpus), device=resolve_device())
    _quiet_libraries()
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # until procrastinate takes the signals over
        signal.signal(sig, lambda *_: stopping.set())
    from srweb.train.worker import die_with_parent

    die_with_parent(signal.SIGTERM)  # started by the app (SRWEB_LOCAL_WORKERS): stop with it
    if retry_forever("the database", lambda: _startup(name, gpus), stop=stopping) is None and stopping.is_set():
        return 0
    side_stop = threading.Event()
    threading.Thread(target=_side_loop, args=(side_stop,), daemon=True).start()
    say(f"ready on {_state.device} (gpus {_state.gpus}), waiting for runs")
    try:
        _serve(stopping)
    finally:
        side_stop.set()
        retry_forever("the database", lambda: write_transaction(lambda s: unregister_worker(s, name)))
    say("stopped")
    return 0


def _serve(stopping: threading.Event) -> None:
    delay = 1.0
    while not stopping.is_set():
        started = time.monotonic()
        try:
            queue.make_app(task_body=train_job).run_worker(
                queues=[queue.QUEUE],
                name=_state.name,
                concurrency=1,
                wait=True,
                listen_notify=True,
                update_heartbeat_interval=HEARTBEAT_S,
                stalled_worker_timeout=STALLED_AFTER_S,
                abort_job_polling_interval=POLL_S,
                fetch_job_polling_interval=POLL_S,
                shutdown_graceful_timeout=0,
                delete_jobs="never",
                install_signal_handlers=True,
            )
            return  # a signal stopped it: the running run was checkpointed and queued again
        except Exception as exc:  # lost the database (e.g. a restart): one line, then again
            delay = 1.0 if time.monotonic() - started > 60 else min(MAX_BACKOFF_S, delay * 2)
            say(
                f"lost the queue ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                f"reconnecting in {delay:.0f} s"
            )
            stopping.wait(delay)
