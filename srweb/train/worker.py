"""Worker process of one background run: ``python -m srweb.train.worker RUN_ID``.

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


def run_worker(run_id: int, cancel: threading.Event | None = None) -> int:
    """Train run ``run_id`` to completion, cancellation or failure; returns the exit code.

    ``cancel`` (set by SIGTERM/SIGINT) makes the trainer save a checkpoint and stop.
    """
    from srweb.config import apply_threads, get_settings
    from srweb.track.db import init_db, write_transaction
    from srweb.track.runs import get_run, set_status
    from srweb.train.config import TrainConfig
    from srweb.train.session import train_tracked

    apply_threads(sharers=get_settings().max_parallel_jobs)
    init_db()

    def begin(session):
        run = get_run(session, run_id)
        if run is None:
            raise SystemExit(f"no run with id {run_id}")
        if run.status == "queued":
            set_status(session, run_id, "running")
        import os

        run.pid = os.getpid()
        return TrainConfig.from_dict(run.config), Path(run.run_dir)

    cfg, run_dir = write_transaction(begin)
    cancel = cancel or threading.Event()
    try:
        result = train_tracked(cfg, run_dir, run_id, should_stop=cancel.is_set)
    except BaseException:  # recorded on the run by train_tracked; the log gets the whole traceback
        traceback.print_exc()
        return 1
    print(f"run {run_id} {result.status} at step {result.step}", flush=True)
    return 0


def main() -> None:
    cancel = threading.Event()
    # Before the heavy imports: a cancel that arrives while torch loads must still stop cleanly
    # (saving a checkpoint), not kill the worker with SIGTERM's default action.
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    signal.signal(signal.SIGINT, lambda *_: cancel.set())
    from srweb.data.folders import show_warnings_as_lines

    show_warnings_as_lines()  # a skipped training or validation image: one line in the log, once
    code = run_worker(int(sys.argv[1]), cancel)
    try:
        from srweb.train.jobs import dispatch

        dispatch()  # hand the device to the next queued run
    except Exception:
        pass
    sys.exit(code)


if __name__ == "__main__":
    main()
