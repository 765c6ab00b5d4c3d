"""Launch guard for interactive front ends: extra pre-flight checks and no duplicate submissions.

``jobs.check_config`` validates hyperparameters, data folders and the patch size; :func:`preflight`
adds a device check (``cuda`` on a machine without one fails up front, not later in the worker).
:func:`submit_once` refuses a config identical to a run queued moments ago, so a double-clicked
Launch button (or a retried API call) queues one run, not two.
"""

from __future__ import annotations

import threading

from srweb.track.db import init_db, session_scope
from srweb.track.runs import list_runs
from srweb.track.schema import utcnow
from srweb.train import jobs
from srweb.train.config import ConfigError, TrainConfig
from srweb.config import resolve_device
from srweb.train.queue import uses_queue

DUPLICATE_WINDOW_S = 10.0
_submit_lock = threading.Lock()


class DuplicateLaunch(jobs.JobError):
    """An identical config was queued a few seconds ago; ``run_id`` is that run."""

    def __init__(self, run_id: int, seconds: float) -> None:
        super().__init__(f"an identical run (#{run_id}) was queued {seconds:.0f} s ago; not queued twice")
        self.run_id = run_id


def available_devices() -> list[str]:
    """Device choices for a form: ``auto``, ``cpu`` and whichever accelerators are present."""
    import torch  # heavy: the device list is only built for the Train tab

    devices = ["auto", "cpu"]
    devices += [f"cuda:{i}" if i else "cuda" for i in range(torch.cuda.device_count())]
    if uses_queue() and "cuda" not in devices:  # trained by a `srweb worker`, maybe on a GPU machine
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def check_device(device: str) -> None:
    """Reject a device this machine does not have (``auto`` and ``cpu`` always pass)."""
    try:
        resolve_device(device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def preflight(cfg: TrainConfig) -> TrainConfig:
    """``jobs.check_config`` (hyperparameters, data folders, patch size) plus a device check;
    returns the resolved config.

    Raises:
        ConfigError: the first problem found, in words.
    """
    cfg = jobs.check_config(cfg)
    if not uses_queue():  # with a server database the worker that takes the run has the device
        check_device(cfg.device)
    return cfg


def _recent_duplicate(cfg: TrainConfig, window: float, url: str | None = None) -> tuple[int, float] | None:
    now = utcnow()
    wanted = cfg.to_dict()
    with session_scope(url, write=False) as session:
        for run in list_runs(session, status=("queued", "running"), limit=50):
            age = (now - run.created_at).total_seconds()
            if age <= window and run.config == wanted:
                return run.id, age
    return None


def submit_once(cfg: TrainConfig, *, window: float = DUPLICATE_WINDOW_S) -> int:
    """Pre-flight and queue ``cfg`` unless an identical run was queued within ``window`` seconds.

    Returns the new run id.

    Raises:
        ConfigError: invalid config (see :func:`preflight`).
        DuplicateLaunch: an identical queued/running run is younger than ``window`` seconds.
    """
    cfg = preflight(cfg)
    init_db()
    with _submit_lock:  # the check and the insert must not interleave between two handler threads
        duplicate = _recent_duplicate(cfg, window)
        if duplicate is not None:
            raise DuplicateLaunch(*duplicate)
        return jobs.submit(cfg)
