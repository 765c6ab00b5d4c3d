"""Worker process of one background run: ``python -m srweb.train.worker RUN_ID [RUN_DIR]``.

Records heartbeats, metrics and the outcome in the tracker; SIGTERM (cancel) makes the
trainer save a checkpoint and stop; any exception marks the run failed with its message.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from pathlib import Path

# Only the standard library at import time: main() must catch SIGTERM before torch loads (seconds).


def run_worker(run_id: int, cancel: threading.Event | None = None, run_dir: Path | None = None) -> int:
    """Train run ``run_id`` to completion, cancellation or failure; returns the exit code.

    ``cancel`` (set by SIGTERM/SIGINT) makes the trainer save a checkpoint and stop. ``run_dir``
    (a ``srweb worker``'s local copy of the run folder) replaces the run's recorded folder. Under
    torchrun (``srweb worker --gpus N``) only rank 0 touches the tracker. The database being away
    is waited out (:func:`srweb.track.db.until_reachable`), never recorded as the run's failure.
    """
    import os

    from srweb.config import apply_threads, get_settings
    from srweb.track.db import init_db, until_reachable, write_transaction
    from srweb.track.runs import get_run, set_status
    from srweb.train.config import TrainConfig
    from srweb.train.session import train_tracked

    if int(os.environ.get("RANK", "0")) > 0:
        return _train_untracked_rank(run_id, cancel or threading.Event(), run_dir)
    apply_threads(sharers=get_settings().max_parallel_jobs)
    until_reachable(init_db)

    def begin(session):
        run = get_run(session, run_id)
        if run is None:
            raise SystemExit(f"no run with id {run_id}")
        if run.status == "queued":
            set_status(session, run_id, "running")
        import os

        run.pid = os.getpid()
        return TrainConfig.from_dict(run.config), Path(run_dir or run.run_dir)

    cfg, run_dir = until_reachable(lambda: write_transaction(begin))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        print(f"run {run_id}: DDP, rank 0 of {os.environ['WORLD_SIZE']} processes records the run", flush=True)
    cancel = cancel or threading.Event()
    try:
        result = train_tracked(cfg, run_dir, run_id, should_stop=cancel.is_set)
    except BaseException:  # recorded on the run by train_tracked; the log gets the whole traceback
        traceback.print_exc()
        return 1
    print(f"run {run_id} {result.status} at step {result.step}", flush=True)
    return 0


def _train_untracked_rank(run_id: int, cancel: threading.Event, run_dir: Path | None) -> int:
    """A DDP rank other than 0: trains its share; rank 0 records the run."""
    from srweb.track.db import session_scope
    from srweb.track.runs import get_run
    from srweb.train.config import TrainConfig
    from srweb.train.trainer import Trainer

    with session_scope(write=False) as session:
        run = get_run(session, run_id)
        cfg, folder = TrainConfig.from_dict(run.config), Path(run_dir or run.run_dir)
    Trainer(cfg, folder, should_stop=cancel.is_set, run_id=run_id).train()
    return 0


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """When started by a process that set ``SRWEB_PARENT_PID`` (a ``srweb worker`` starting a
    trainer, the app starting its local workers): on Linux, receive ``sig`` when that parent dies.
    A SIGKILLed worker must not leave its trainer writing to a run another worker resumes; an app
    that is stopped stops its workers (SIGTERM: they checkpoint and requeue their runs)."""
    import os

    parent = os.environ.pop("SRWEB_PARENT_PID", None)  # for this process only, not for its own children
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
    if os.getppid() != int(parent):  # it died before the line above: follow it now
        os.kill(os.getpid(), sig)


def main() -> None:
    die_with_parent()
    cancel = threading.Event()
    # Before the heavy imports: a cancel that arrives while torch loads must still stop cleanly
    # (saving a checkpoint), not kill the worker with SIGTERM's default action.
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    signal.signal(signal.SIGINT, lambda *_: cancel.set())
    from srweb.data.folders import show_warnings_as_lines

    show_warnings_as_lines()  # a skipped training or validation image: one line in the log, once
    run_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    code = run_worker(int(sys.argv[1]), cancel, run_dir)
    if run_dir is None:  # started by this machine's dispatcher (a `srweb worker` fetches its own next run)
        try:
            from srweb.train.jobs import dispatch

            dispatch()  # hand the device to the next queued run
        except Exception:
            pass
    sys.exit(code)


if __name__ == "__main__":
    main()
