"""A training recorded in the tracker, the same for ``srweb train`` and a background worker: a
heartbeat thread, the resolved device on the run row, metrics and the best PSNR as they come, the
outcome (step, checkpoints, exported weights, status) at the end, and the failure text on an error."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from srweb.errors import first_line
from srweb.track.db import is_connection_error, until_reachable, write_transaction
from srweb.track.runs import (
    ORPHAN_ERROR,
    MetricsBuffer,
    add_checkpoint,
    delete_metrics_after,
    get_run,
    heartbeat,
    set_status,
)
from srweb.train.config import TrainConfig
from srweb.train.trainer import Trainer, TrainResult

HEARTBEAT_SECONDS = 2.0
MAX_ERROR_CHARS = 2000


class RunLogger:
    """Metrics to the tracker (batched) and the best validation PSNR onto the run row."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.buffer = MetricsBuffer(run_id, max_interval=HEARTBEAT_SECONDS)
        self.step = 0
        self.clock: Callable[[], float] | None = None  # the trainer's training time, once it exists
        self.offline = False  # the last write found the database unreachable
        self.best_pending: float | None = None  # a best PSNR not yet written (database away)

    def log(self, step: int, values: dict[str, float]) -> None:
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
                print(
                    f"cannot reach the database ({first_line(exc.orig)}); metrics are kept and written once it is back",
                    flush=True,
                )
            self.offline = True
            self.buffer.postpone()
            if "val_psnr" in values:
                self.best_pending = max(values["val_psnr"], self.best_pending or float("-inf"))

    def _record_best(self, psnr: float) -> None:
        psnr = max(psnr, self.best_pending or float("-inf"))

        def best(session) -> None:
            run = get_run(session, self.run_id)
            if run.best_psnr is None or psnr > run.best_psnr:
                run.best_psnr = psnr

        write_transaction(best)
        self.best_pending = None

    def flush(self) -> None:
        until_reachable(self.buffer.flush)
        if self.best_pending is not None:
            until_reachable(lambda: self._record_best(self.best_pending))

    def resumed(self, step: int) -> None:
        """Forget what a killed session logged after its last checkpoint (``step``): those steps
        are trained again, and the curve shows each step once."""
        until_reachable(self.buffer.flush)
        until_reachable(lambda: write_transaction(lambda s: delete_metrics_after(s, self.run_id, step)))


def heartbeat_loop(run_id: int, logger: RunLogger, stop: threading.Event) -> None:
    """Stamp the run's heartbeat every HEARTBEAT_SECONDS until ``stop`` is set."""
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            seconds = logger.clock() if logger.clock else None
            write_transaction(lambda s: heartbeat(s, run_id, step=logger.step, train_seconds=seconds))
        except Exception:  # a missed heartbeat is harmless; the next one retries
            pass


def record_result(session, run_id: int, trainer, result) -> None:
    """Store a finished or cancelled training's outcome on its run: step, best PSNR, the
    checkpoint to resume from, the exported weights, and the final status."""
    run = get_run(session, run_id)
    if run.status == "failed" and (run.error or "").startswith(ORPHAN_ERROR):
        run.status, run.error = "running", None  # taken for dead while paused (Ctrl-Z, sleep): it was not
    run.step, run.train_seconds = result.step, result.wall_seconds
    if result.best_psnr is not None:
        run.best_psnr = result.best_psnr
    add_checkpoint(session, run_id, step=result.step, path=str((trainer.run_dir / "last.pt").resolve()), kind="last")
    if result.card is not None:
        run.weights_name = result.card.name
        add_checkpoint(
            session,
            run_id,
            step=result.step,
            kind="export",
            psnr=result.best_psnr,
            path=str((trainer.export_dir / f"{result.card.name}.safetensors").resolve()),
        )
    set_status(session, run_id, result.status)


def failure_text(exc: BaseException) -> str:
    """What a failed run's row says: the exception's type and message, bounded."""
    return f"{type(exc).__name__}: {exc}".strip()[:MAX_ERROR_CHARS] if str(exc).strip() else first_line(exc)


def train_tracked(
    cfg: TrainConfig,
    run_dir: Path,
    run_id: int,
    *,
    should_stop: Callable[[], bool],
    export_dir: str | Path | None = None,
) -> TrainResult:
    """Train ``cfg`` in ``run_dir`` as run ``run_id`` (already marked running) and record it.

    Raises whatever training raised, after marking the run failed with :func:`failure_text`.
    """
    logger = RunLogger(run_id)
    done = threading.Event()
    # The run is not taken for dead during a long validation or export.
    threading.Thread(target=heartbeat_loop, args=(run_id, logger, done), daemon=True).start()
    try:
        trainer = Trainer(cfg, run_dir, logger=logger, should_stop=should_stop, export_dir=export_dir, run_id=run_id)
        logger.clock = trainer.wall_seconds
        until_reachable(lambda: write_transaction(lambda s: setattr(get_run(s, run_id), "device", trainer.device)))
        result = trainer.train()
    except BaseException as exc:
        message = failure_text(exc)
        until_reachable(lambda: write_transaction(lambda s: set_status(s, run_id, "failed", error=message)))
        raise
    finally:
        done.set()
    until_reachable(lambda: write_transaction(lambda s: record_result(s, run_id, trainer, result)))
    return result
