"""Worker process of one background run: ``python -m srweb.train.worker RUN_ID [RUN_DIR]``.

Records heartbeats, metrics and the outcome in the tracker; SIGTERM (cancel) makes the
trainer save a checkpoint and stop; any exception marks the run failed with its message.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

# Only the standard library at import time: main() must catch SIGTERM before torch loads (seconds).
HEARTBEAT_SECONDS = 2.0


class RunLogger:
    """Metrics to the tracker (batched) and the best validation PSNR onto the run row."""

    def __init__(self, run_id: int) -> None:
        from srweb.track.runs import MetricsBuffer

        self.run_id = run_id
        self.buffer = MetricsBuffer(run_id, max_interval=HEARTBEAT_SECONDS)
        self.step = 0
        self.clock: Callable[[], float] | None = None  # the trainer's training time, once it exists
        self.offline = False  # the last write found the database unreachable
        self.best_pending: float | None = None  # a best PSNR not yet written (database away)

    def log(self, step: int, values: dict[str, float]) -> None:
        from srweb.track.db import is_connection_error

        self.step = step
        try:
            self.buffer.log(step, values)
            if "val_psnr" in values:
                self.buffer.flush()
                self._record_best(values["val_psnr"])
            self.offline = False
        except Exception as exc:  # the database is away: keep the rows, train on, write them later
            if not is_connection_error(exc):
                raise
            if not self.offline:
                reason = (str(exc.orig).strip().splitlines() or [type(exc).__name__])[0]
                print(f"cannot reach the database ({reason}); metrics are kept and written once it is back",
                      flush=True)
            self.offline = True
            self.buffer.postpone()
            if "val_psnr" in values:
                self.best_pending = max(values["val_psnr"], self.best_pending or float("-inf"))

    def _record_best(self, psnr: float) -> None:
        from srweb.track.db import write_transaction
        from srweb.track.runs import get_run

        psnr = max(psnr, self.best_pending or float("-inf"))

        def best(session) -> None:
            run = get_run(session, self.run_id)
            if run.best_psnr is None or psnr > run.best_psnr:
                run.best_psnr = psnr

        write_transaction(best)
        self.best_pending = None

    def flush(self) -> None:
        from srweb.track.db import until_reachable

        until_reachable(self.buffer.flush)
        if self.best_pending is not None:
            until_reachable(lambda: self._record_best(self.best_pending))

    def resumed(self, step: int) -> None:
        """Forget what a killed session logged after its last checkpoint (``step``): those steps
        are trained again, and the curve shows each step once."""
        from srweb.track.db import write_transaction
        from srweb.track.runs import delete_metrics_after

        from srweb.track.db import until_reachable

        until_reachable(self.buffer.flush)
        until_reachable(lambda: write_transaction(lambda s: delete_metrics_after(s, self.run_id, step)))


def heartbeat_loop(run_id: int, logger: RunLogger, stop: threading.Event) -> None:
    """Stamp the run's heartbeat every HEARTBEAT_SECONDS until ``stop`` is set."""
    from srweb.track.db import write_transaction
    from srweb.track.runs import heartbeat

    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            seconds = logger.clock() if logger.clock else None
            write_transaction(lambda s: heartbeat(s, run_id, step=logger.step, train_seconds=seconds))
        except Exception:  # a missed heartbeat is harmless; the next one retries
            pass


def record_result(session, run_id: int, trainer, result) -> None:
    """Store a finished or cancelled training's outcome on its run: step, best PSNR, the
    checkpoint to resume from, the exported weights, and the final status."""
    from srweb.track.runs import ORPHAN_ERROR, add_checkpoint, get_run, set_status

    run = get_run(session, run_id)
    if run.status == "failed" and (run.error or "").startswith(ORPHAN_ERROR):
        run.status, run.error = "running", None  # taken for dead while paused (Ctrl-Z, sleep): it was not
    run.step, run.train_seconds = result.step, result.wall_seconds
    if result.best_psnr is not None:
        run.best_psnr = result.best_psnr
    add_checkpoint(session, run_id, step=result.step, path=str((trainer.run_dir / "last.pt").resolve()), kind="last")
    if result.card is not None:
        run.weights_name = result.card.name
        add_checkpoint(session, run_id, step=result.step, kind="export", psnr=result.best_psnr,
                       path=str((trainer.export_dir / f"{result.card.name}.safetensors").resolve()))
    set_status(session, run_id, result.status)


def run_worker(run_id: int, cancel: threading.Event | None = None, run_dir: Path | None = None) -> int:
    """Train run ``run_id`` to completion, cancellation or failure; returns the exit code.

    ``cancel`` (set by SIGTERM/SIGINT) makes the trainer save a checkpoint and stop. ``run_dir``
    (a ``srweb worker``'s local copy of the run folder) replaces the run's recorded folder. Under
    torchrun (``srweb worker --gpus N``) only rank 0 touches the tracker.
    """
    import os

    if int(os.environ.get("RANK", "0")) > 0:
        return _train_untracked_rank(run_id, cancel or threading.Event(), run_dir)
    from srweb.config import apply_threads, get_settings
    from srweb.track.db import init_db, until_reachable, write_transaction
    from srweb.track.runs import get_run, set_status
    from srweb.train.config import TrainConfig
    from srweb.train.trainer import Trainer

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
    logger = RunLogger(run_id)
    done = threading.Event()
    threading.Thread(target=heartbeat_loop, args=(run_id, logger, done), daemon=True).start()
    try:
        trainer = Trainer(cfg, run_dir, logger=logger, should_stop=cancel.is_set, run_id=run_id)
        logger.clock = trainer.wall_seconds
        until_reachable(lambda: write_transaction(lambda s: setattr(get_run(s, run_id), "device", trainer.device)))
        result = trainer.train()
    except BaseException as exc:
        done.set()
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}".strip()
        until_reachable(lambda: write_transaction(lambda s: set_status(s, run_id, "failed", error=message[:2000])))
        return 1
    done.set()
    until_reachable(lambda: write_transaction(lambda s: record_result(s, run_id, trainer, result)))
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
