"""Background training jobs: a queue in the tracker database, one OS process per run.

``submit`` validates a config and queues a run; ``dispatch`` starts queued runs while fewer
than ``max_parallel_jobs`` are running (called on submit, when a worker ends, and by the
app's watcher). ``cancel`` sends SIGTERM: the worker saves a checkpoint and exits.
``reap`` marks runs whose worker died (SIGKILL, out of memory, app restart) as failed.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy.orm import Session

from srweb.config import get_settings
from srweb.data.samples import benchmark_path
from srweb.track.db import init_db, session_scope, write_transaction
from srweb.track.runs import (
    create_run,
    delete_run,
    get_run,
    mark_orphans,
    pid_alive,
    reopen_run,
    running_run_of_pid,
    runs_with_status,
    set_status,
    shares_run_dir,
)
from srweb.track.schema import Run
from srweb.train.config import ConfigError, TrainConfig
from srweb.train.queue import abort_run, defer_run, uses_queue

_children: dict[int, subprocess.Popen] = {}
_children_lock = threading.Lock()


class JobError(ValueError):
    """A job action that cannot be done (e.g. cancelling a finished run)."""


def check_config(cfg: TrainConfig) -> TrainConfig:
    """Resolve defaults and reject impossible hyperparameters before anything is queued: values,
    data folders, a patch too few training images hold, a teacher that is not trained weights, and a
    batch whose training step cannot fit in the device's free memory (:mod:`srweb.train.memory`)."""
    from srweb.train.memory import check_step_fits  # torch: heavy; `srweb jobs list` and the queue need none

    cfg = cfg.resolved().validate()
    # With a server database another machine trains the run: folders this control plane lacks
    # (and its own memory) are the worker's to check; it fails the run saying what is missing.
    elsewhere = uses_queue()
    for label, value in (("data", cfg.data), ("val_data", cfg.val_data)):
        if value:
            try:
                path = Path(benchmark_path(value))
            except (ValueError, FileNotFoundError) as exc:
                if elsewhere:
                    continue
                raise ConfigError(f"{label}: {exc}") from None
            if not path.exists():
                raise ConfigError(f"{label}: {value} not found")
            sides = _image_sides(path) if path.is_dir() else []
            if label == "data" and not sides:
                from srweb.data.div2k import is_div2k_tree  # torch: heavy; only for a folder without images

                if not is_div2k_tree(path):
                    raise ConfigError(f"data: {value} holds no readable image (nor DIV2K's folders)")
            elif not sides:
                raise ConfigError(f"{label}: {value} holds no readable image")
            if label == "data":
                _check_patch_fits(cfg, sides)
    if cfg.teacher:
        from srweb.train.teacher import check_teacher  # torch: heavy; only a config with a teacher

        check_teacher(cfg.teacher)
    if not elsewhere:
        check_step_fits(cfg)
    return cfg


MIN_FITTING_SHARE = 0.9
"""A patch is refused when fewer than this share of the training images can hold it; the
dataset skips the smaller ones (and too-small scale-augmented copies) with a warning."""


def _image_sides(folder: Path) -> list[tuple[int, str, int, int]]:
    """``(smaller side, file name, width, height)`` of each readable image directly inside
    ``folder``, smallest first (header reads only); empty when there is none (e.g. a DIV2K tree)."""
    from srweb.imaging.io import ImageError, image_size, is_image_file  # torch: heavy; headers only here

    sides = []
    for path in folder.iterdir():
        if not (path.is_file() and is_image_file(path)):
            continue
        try:
            width, height = image_size(path)
        except ImageError:
            continue  # the dataset skips it with its reason
        sides.append((min(width, height), path.name, width, height))
    return sorted(sides)


def _check_patch_fits(cfg: TrainConfig, sides: list[tuple[int, str, int, int]]) -> None:
    """Reject an HR patch (``patch_size * scale``) that fewer than ``MIN_FITTING_SHARE`` of the
    training images (``sides``: :func:`_image_sides`), rounded down, can hold (so a small folder may
    hold one image too small); the dataset skips the smaller ones."""
    if not sides:
        return
    need = cfg.patch_size * cfg.scale
    fitting = sum(side >= need for side, *_ in sides)
    required = max(1, math.floor(MIN_FITTING_SHARE * len(sides)))
    if fitting >= required:
        return
    _, name, width, height = sides[0]
    every, most = min(width, height) // cfg.scale, sides[len(sides) - required][0] // cfg.scale
    limits = [(every, "every image")] * (every > 0) + [(most, f"{required} of them")] * (0 < most != every)
    advice = [f"{'patch_size ' if i == 0 else ''}<= {side} to use {which}" for i, (side, which) in enumerate(limits)]
    raise ConfigError(
        f"patch_size {cfg.patch_size} at x{cfg.scale} needs {need}x{need} HR pixels, but only {fitting} of the "
        f"{len(sides)} training images in {cfg.data} are that large (the smallest, {name}, is {width}x{height})"
        + (f"; use {', or '.join(advice)}" if advice else "; leave the smallest images out of the folder")
    )


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def create_tracked_run(session: Session, cfg: TrainConfig) -> Run:
    """Insert a queued run for ``cfg`` with its run folder and log file."""
    run = create_run(
        session,
        name=cfg.name,
        arch=cfg.model,
        scale=cfg.scale,
        config=cfg.to_dict(),
        total_steps=cfg.iterations,
        git_commit=git_commit(),
        host=socket.gethostname(),
    )
    if uses_queue():  # trained on any worker: the folder lives in the artifact store
        from srweb.artifacts import run_location

        location = run_location(run.id, cfg.name)
        run.run_dir, run.log_path = location, f"{location}/train.log"
        session.flush()
        return run
    run_dir = get_settings().runs_dir.resolve() / f"{run.id:05d}-{cfg.name}"
    run.run_dir, run.log_path = str(run_dir), str(run_dir / "train.log")
    session.flush()
    return run


def submit(cfg: TrainConfig, *, start: bool = True) -> int:
    """Validate and queue a training run; start it now if a slot is free. Returns the run id."""
    cfg = check_config(cfg)
    init_db()
    run_id = write_transaction(lambda s: create_tracked_run(s, cfg).id)
    if uses_queue():
        defer_run(run_id)  # any `srweb worker` takes it
    elif start:
        dispatch()
    return run_id


def _spawn(run: Run) -> int:
    Path(run.run_dir).mkdir(parents=True, exist_ok=True)
    if run.log_path is None:  # a foreground run resumed as a job: from now on it has a log
        run.log_path = str(Path(run.run_dir) / "train.log")
    Path(run.log_path).parent.mkdir(parents=True, exist_ok=True)
    log = open(run.log_path, "ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "srweb.train.worker", str(run.id)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    log.close()
    with _children_lock:
        _children[proc.pid] = proc
    return proc.pid


def dispatch() -> list[int]:
    """Start queued runs (oldest first) while running ones are fewer than the limit. With a
    PostgreSQL database nothing: ``srweb worker`` processes take queued runs (:mod:`srweb.train.remote`)."""
    if uses_queue():
        return []
    limit = get_settings().max_parallel_jobs

    def start(session: Session) -> list[int]:
        free = max(0, limit - len(runs_with_status(session, "running")))
        started: list[int] = []
        for run in runs_with_status(session, "queued"):
            if len(started) == free:
                break
            try:
                pid = _spawn(run)
            except OSError as exc:  # e.g. an unwritable run folder: this run fails, the queue goes on
                set_status(session, run.id, "failed", error=f"could not start the worker: {exc}")
                continue
            set_status(session, run.id, "running", pid=pid, host=socket.gethostname())
            started.append(run.id)
        return started

    return write_transaction(start)


def _child_exit_codes() -> dict[int, int]:
    """Exit codes of workers this process started that have ended (and reaps them)."""
    ended = {}
    with _children_lock:
        for pid, proc in list(_children.items()):
            code = proc.poll()
            if code is not None:
                ended[pid] = code
                del _children[pid]
    return ended


def reap() -> list[int]:
    """Mark runs whose worker is gone as failed, then start queued runs. Returns ids marked."""
    ended = _child_exit_codes()

    def mark(session: Session) -> list[int]:
        marked = []
        for pid, code in ended.items():
            run = running_run_of_pid(session, pid)
            if run is not None:  # the worker ended without recording an outcome: it was killed
                how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
                set_status(session, run.id, "failed", error=f"worker died: {how}")
                marked.append(run.id)
        return marked + mark_orphans(session, is_alive=_alive)

    marked = write_transaction(mark)
    dispatch()
    return marked


def _alive(pid: int) -> bool:
    with _children_lock:
        if pid in _children:
            # Our own worker: if it has just ended, the next reap() reads its exit code ("killed by
            # signal 9"); calling it dead here would record only "pid ... is gone".
            return True
    if not pid_alive(pid):
        return False
    try:  # a zombie (ended, not yet reaped by its parent) is not a live worker
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return True


def cancel(run_id: int) -> str:
    """Cancel a queued or running run; returns its new status (``cancelled`` or ``cancelling``)."""

    def act(session: Session) -> str:
        run = get_run(session, run_id)
        if run is None:
            raise JobError(f"no run with id {run_id}")
        if run.status == "queued":
            set_status(session, run_id, "cancelled")
            if uses_queue():
                abort_run(run_id)  # drop its waiting job (a worker that took it meanwhile skips it)
            return "cancelled"
        if run.status != "running":
            raise JobError(f"run {run_id} is already {run.status}; nothing to cancel")
        if uses_queue():  # the worker, wherever it is, polls for the abort every second
            abort_run(run_id)
            return "cancelling"
        if run.pid and run.host in (None, socket.gethostname()):
            try:
                os.kill(run.pid, signal.SIGTERM)
            except ProcessLookupError:
                set_status(session, run_id, "failed", error="worker died before cancel")
                return "failed"
        return "cancelling"

    return write_transaction(act)


def resume(run_id: int) -> int:
    """Queue a failed or cancelled run again; it continues from its last checkpoint (refused when
    its folder's checkpoint is no longer one this run may continue: see :mod:`srweb.train.resume`)."""

    def act(session: Session) -> int:
        from srweb.train.resume import check_resume, read_saved_run  # torch: heavy; only resume needs it

        run = get_run(session, run_id)
        if run is not None and run.status in ("failed", "cancelled") and run.run_dir:
            try:
                saved = read_saved_run(run.run_dir)
                if saved is not None:
                    check_resume(saved, TrainConfig.from_dict(run.config), run.run_dir)
            except ConfigError as exc:
                raise JobError(f"run {run_id} cannot resume: {exc}") from None
        try:
            return reopen_run(session, run_id).id
        except KeyError:
            raise JobError(f"no run with id {run_id}") from None
        except ValueError as exc:
            raise JobError(str(exc)) from None

    write_transaction(act)
    if uses_queue():
        defer_run(run_id)
    else:
        dispatch()
    return run_id


def delete(run_id: int) -> str:
    """Delete a run that is not queued or running: its row, metrics and checkpoint records, and its
    folder (checkpoints, log) when that is under the runs folder and no other run trains in it.
    Weights exported to the weights folders stay. Returns what was done, in a sentence."""

    def act(session: Session) -> tuple[Path | None, bool]:
        run = get_run(session, run_id)
        if run is None:
            raise JobError(f"no run with id {run_id}")
        if run.status in ("queued", "running"):
            raise JobError(f"run {run_id} is {run.status}; cancel it first (srweb jobs cancel {run_id})")
        shared, folder = shares_run_dir(session, run), (Path(run.run_dir) if run.run_dir else None)
        delete_run(session, run)
        return folder, shared

    folder, shared = write_transaction(act)
    if folder is None or not folder.is_dir():
        return f"run {run_id} deleted"
    root = get_settings().runs_dir.resolve()
    if shared:
        return f"run {run_id} deleted; its folder {folder} stays: another run trains in it"
    if not folder.resolve().is_relative_to(root):
        return f"run {run_id} deleted; its folder {folder} stays (outside the runs folder {root})"
    shutil.rmtree(folder, ignore_errors=True)
    return f"run {run_id} deleted with its folder"


def log_tail(run_id: int, lines: int = 40) -> str:
    """The last ``lines`` lines of a run's log (progress-bar redraws collapsed); a run trained in
    the foreground (``srweb train``) has none: its output went to its terminal, and this says so."""
    with session_scope(write=False) as session:
        run = get_run(session, run_id)
        if run is None:
            raise JobError(f"no run with id {run_id}")
        path = run.log_path or None
    if path is None:
        return f"run {run_id} trained in the foreground (srweb train): its output went to that terminal, not to a log"
    text = _read_log_tail(str(path), 200_000)
    rows = [part.split("\r")[-1] for part in text.split("\n")]  # splitlines() would split at \r too
    return "\n".join([r for r in rows if r.strip()][-lines:])


def _read_log_tail(location: str, nbytes: int) -> str:
    """The end of a log: a local file, or one a worker pushed to the artifact store."""
    from srweb.artifacts import ArtifactError, is_remote_location, read_tail

    if is_remote_location(location):
        try:
            return read_tail(location, nbytes).decode(errors="replace")
        except ArtifactError as exc:
            return str(exc)
    path = Path(location)
    if not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - nbytes))
        return fh.read().decode(errors="replace")
