"""A training recorded in the tracker, the same for ``srweb train`` and a background worker: a
heartbeat thread, the resolved device on the run row, metrics and the best PSNR as they come, the
outcome (step, checkpoints, exported weights, status) at the end, and the failure text on an error."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from srweb.errors import first_line
from srweb.track.db import write_transaction
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

    def log(self, step: int, values: dict[str, float]) -> None:
        self.step = step
        self.buffer.log(step, values)
        if "val_psnr" in values:
            self.buffer.flush()

            def best(session) -> None:
                run = get_run(session, self.run_id)
                if run.best_psnr is None or values["val_psnr"] > run.best_psnr:
                    run.best_psnr = values["val_psnr"]

            write_transaction(best)

    def flush(self) -> None:
        self.buffer.flush()

    def resumed(self, step: int) -> None:
        """Forget what a killed session logged after its last checkpoint (``step``): those steps
        are trained again, and the curve shows each step once."""
        self.buffer.flush()
        write_transaction(lambda s: delete_metrics_after(s, self.run_id, step))


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
        add_checkpoint(session, run_id, step=result.step, kind="export", psnr=result.best_psnr,
                       path=str((trainer.export_dir / f"{result.card.name}.safetensors").resolve()))
    set_status(session, run_id, result.status)


def failure_text(exc: BaseException) -> str:
    """What a failed run's row says: the exception's type and message, bounded."""
    return f"{type(exc).__name__}: {exc}".strip()[:MAX_ERROR_CHARS] if str(exc).strip() else first_line(exc)


def train_tracked(cfg: TrainConfig, run_dir: Path, run_id: int, *, should_stop: Callable[[], bool],
                  export_dir: str | Path | None = None) -> TrainResult:
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
        write_transaction(lambda s: setattr(get_run(s, run_id), "device", trainer.device))  # "auto" resolved
        result = trainer.train()
    except BaseException as exc:
        message = failure_text(exc)
        write_transaction(lambda s: set_status(s, run_id, "failed", error=message))
        raise
    finally:
        done.set()
    write_transaction(lambda s: record_result(s, run_id, trainer, result))
    return result
