"""Background jobs end to end: a real SQLite file, real worker processes, real signals.

Each test gets its own state folder (database, runs) and tiny crops of the sample photos / Set5,
so a worker spends its time starting Python and torch, not training. The acceptance
scenario of the training issue (EDSR-baseline on General-100, validated on Set5, cancelled,
resumed, finished, all in the database) runs on full-size images: the sample photos as a
data-root folder named General-100, and the built-in Set5.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select, text

import srweb
from conftest import SET5, crops, hr_photos
from srweb.config import apply_threads, get_settings
from srweb.track import views
from srweb.track.db import session_scope, write_transaction
from srweb.track.runs import create_run, get_run, metric_series, set_status
from srweb.track.schema import Checkpoint, Run
from srweb.train import jobs
from srweb.train.config import ConfigError, TrainConfig

PAUSE_SECONDS = 3  # a cancelled run waiting to be resumed
TIMEOUT = 120  # seconds; a loaded 2-core machine starts a torch worker in ~5-10 s


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-data")
    return {"train": str(crops(hr_photos(), root / "train", 4, 48)), "val": str(crops(SET5, root / "val", 2, 32))}


@pytest.fixture
def env(jobs_state):
    return jobs_state


def _cfg(tiny, **kw) -> TrainConfig:
    values = dict(
        model="espcn",
        scale=2,
        data=tiny["train"],
        val_data=tiny["val"],
        patch_size=8,
        batch_size=4,
        iterations=20,
        val_interval=10,
        ckpt_interval=10,
        precision="fp32",
    )
    values.update(kw)
    return TrainConfig(**values)


def _run(run_id: int):
    with session_scope(write=False) as session:
        return get_run(session, run_id)


def _wait(run_id: int, predicate, what: str, timeout: float = TIMEOUT, reap: bool = False):
    deadline = time.monotonic() + timeout
    while True:
        if reap:
            jobs.reap()
        run = _run(run_id)
        if predicate(run):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(
                f"run {run_id} not {what} after {timeout} s: {run!r} error={run.error!r}\n{jobs.log_tail(run_id, 30)}"
            )
        time.sleep(0.2)


def _done(run_id: int, status: str = "finished", **kw):
    run = _wait(run_id, lambda r: r.status not in ("queued", "running"), "done", **kw)
    assert run.status == status, f"{run!r} error={run.error!r}\n{jobs.log_tail(run_id, 30)}"
    return run


def _metric_steps(run_id: int, name: str) -> list[int]:
    """Steps of ``name`` in insertion order (the order the run logged them)."""
    with session_scope(write=False) as session:
        rows = session.execute(
            text("SELECT step FROM metrics WHERE run_id = :r AND name = :n ORDER BY id"), {"r": run_id, "n": name}
        ).all()
    return [r[0] for r in rows]


def _checkpoints(run_id: int) -> list[tuple[str, int, str]]:
    with session_scope(write=False) as session:
        rows = session.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(Checkpoint.id))
        return [(c.kind, c.step, c.path) for c in rows]


# --- queue, run, finish -------------------------------------------------------------------------


def test_submit_runs_to_finished_and_second_job_waits_its_turn(env, tiny):
    first = jobs.submit(_cfg(tiny, iterations=30))
    second = jobs.submit(_cfg(tiny, iterations=10, tag="second"))
    assert _run(first).status == "running" and _run(first).pid
    assert _run(second).status == "queued"  # max_parallel_jobs = 1

    def second_waits(run) -> bool:  # while the first runs, the second must stay queued
        if _run(second).status != "queued":
            assert run.status not in ("queued", "running"), "second job started while the first was running"
        return run.status not in ("queued", "running")

    _wait(first, second_waits, "done")
    run = _done(first)
    assert (run.step, run.total_steps) == (30, 30) and run.error is None and run.finished_at is not None
    assert run.weights_name == "espcn-x2.custom" and run.best_psnr > 0 and run.device == "cpu"
    assert run.config == _cfg(tiny, iterations=30).resolved().to_dict()
    with session_scope(write=False) as session:
        series = metric_series(session, first, wide=True)
    assert list(series["loss"].dropna().index) == [10, 20, 30]
    assert list(series["val_psnr"].dropna().index) == [10, 20, 30]
    assert run.best_psnr == pytest.approx(series["val_psnr"].max())
    kinds = {kind: (step, path) for kind, step, path in _checkpoints(first)}
    assert kinds["last"][0] == 30 and Path(kinds["last"][1]).is_file()
    export = Path(kinds["export"][1])
    assert export.is_file() and export.with_suffix(".json").is_file()
    model, card = srweb.load_weights(str(export))
    assert card.num_params == sum(p.numel() for p in model.parameters())
    assert card.training["run_id"] == first and card.metrics[0]["protocol"]["channel"] == "y"
    assert "run %d finished at step 30" % first in jobs.log_tail(first)

    # The first worker handed the slot on: the second runs and finishes without anyone polling.
    second_run = _done(second)
    assert second_run.weights_name == "espcn-x2.second" and second_run.started_at >= run.finished_at


def test_submit_rejects_bad_configs_before_queueing(env, tiny):
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        jobs.submit(_cfg(tiny, batch_size=0))
    with pytest.raises(ConfigError, match="only 0 of the"):
        jobs.submit(_cfg(tiny, patch_size=30))
    with session_scope(write=False) as session:
        assert session.scalar(select(func.count(Run.id))) == 0


# --- cancel and resume ------------------------------------------------------------------------


def _checkpoint_step(run_dir: Path) -> int:
    try:  # last.pt is replaced atomically, so a read sees an old or a new file, never half of one
        return torch.load(run_dir / "last.pt", weights_only=True)["step"]
    except (FileNotFoundError, EOFError, RuntimeError):
        return -1


def _wait_checkpoint(run_dir: Path, above: int, timeout: float = TIMEOUT) -> int:
    """Poll the run folder (faster than the 2 s heartbeat) until last.pt is past step ``above``."""
    deadline = time.monotonic() + timeout
    while (step := _checkpoint_step(run_dir)) <= above:
        assert time.monotonic() < deadline, f"no checkpoint past step {above} in {run_dir} after {timeout} s"
        time.sleep(0.05)
    return step


@pytest.mark.slow
def test_cancel_resume_kill_reap_resume_to_finished(env, tiny):
    """One run through every transition: running -> cancelled -> running -> failed (SIGKILL) -> finished."""
    run_id = jobs.submit(_cfg(tiny, iterations=200, val_interval=100, ckpt_interval=10))
    run_dir = Path(_run(run_id).run_dir)
    _wait_checkpoint(run_dir, above=0)  # the worker is training (a checkpoint every 10 steps)
    assert jobs.cancel(run_id) == "cancelling"
    run = _done(run_id, "cancelled")
    stopped = _checkpoint_step(run_dir)
    assert 10 <= stopped < 200 and run.step == stopped and run.error is None
    assert ("last", stopped, str(run_dir / "last.pt")) in _checkpoints(run_id)
    assert run.weights_name is None  # a cancelled run exports nothing
    with pytest.raises(jobs.JobError, match=f"run {run_id} is already cancelled; nothing to cancel"):
        jobs.cancel(run_id)
    cancelled_steps = _metric_steps(run_id, "loss")
    assert cancelled_steps and cancelled_steps[-1] <= stopped
    assert 0 < run.train_seconds <= (run.finished_at - run.started_at).total_seconds() + 1
    time.sleep(PAUSE_SECONDS)  # the run sits cancelled: this is not training time

    assert jobs.resume(run_id) == run_id
    run = _wait(run_id, lambda r: r.status == "running" and r.pid, "running again")
    killed_at = _wait_checkpoint(run_dir, above=stopped)  # it continued from the checkpoint
    os.kill(run.pid, signal.SIGKILL)
    started = time.monotonic()
    run = _wait(run_id, lambda r: r.status == "failed", "reaped", timeout=10, reap=True)
    assert time.monotonic() - started < 5
    assert run.error == "worker died: killed by signal 9" and run.finished_at is not None
    saved = _checkpoint_step(run_dir)
    assert killed_at <= saved < 200

    assert jobs.resume(run_id) == run_id
    run = _done(run_id)
    assert (run.step, run.weights_name, run.error) == (200, "espcn-x2.custom", None)
    # Its duration is its training time (the trainer's count, which the card records too), not the
    # wall time since it first started, which holds the pause and the reaping.
    assert run.train_seconds < (run.finished_at - run.started_at).total_seconds() - PAUSE_SECONDS
    assert views.runs_frame().set_index("id").loc[run_id, "duration"] == views.format_duration(run.train_seconds)
    steps = _metric_steps(run_id, "loss")
    assert steps[: len(cancelled_steps)] == cancelled_steps
    # Cancel + resume: one curve, no restart. (After SIGKILL, rows still buffered in the dead
    # worker are lost and it resumes from its last checkpoint, so steps stay ordered.)
    assert steps == sorted(steps) and steps[-1] == 200 and steps[0] == 10
    log = jobs.log_tail(run_id, 50)
    assert f"run {run_id} cancelled at step {stopped}" in log and f"run {run_id} finished at step 200" in log

    with pytest.raises(jobs.JobError, match=f"run {run_id} is already finished; nothing to cancel"):
        jobs.cancel(run_id)
    with pytest.raises(jobs.JobError, match="only failed or cancelled runs can be resumed"):
        jobs.resume(run_id)
    with pytest.raises(jobs.JobError, match="no run with id 999"):
        jobs.cancel(999)


def test_cancel_queued_job_never_starts_it(env, tiny, monkeypatch):
    monkeypatch.setenv("SRWEB_MAX_PARALLEL_JOBS", "0")  # nothing gets a slot
    get_settings.cache_clear()
    run_id = jobs.submit(_cfg(tiny))
    assert _run(run_id).status == "queued"
    assert jobs.cancel(run_id) == "cancelled"
    run = _run(run_id)
    assert run.status == "cancelled" and run.pid is None and not jobs._children


def _stored_run(status: str, run_dir: Path | None, **kw) -> int:
    """A run row with metrics and a checkpoint file, as a worker leaves them, without training."""
    from srweb.track.runs import add_checkpoint, log_metrics

    def make(session) -> int:
        run = create_run(
            session,
            name="espcn-x2_test",
            arch="espcn",
            scale=2,
            config={},
            total_steps=20,
            run_dir=str(run_dir) if run_dir else None,
            **kw,
        )
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "last.pt").write_bytes(b"checkpoint")
            add_checkpoint(session, run.id, 10, str(run_dir / "last.pt"))
        log_metrics(session, run.id, 10, {"loss": 0.1, "val_psnr": 30.0})
        if status != "queued":
            set_status(session, run.id, "running")
            set_status(session, run.id, status)
        return run.id

    return write_transaction(make)


def test_delete_removes_a_run_its_metrics_and_its_folder_and_refuses_live_runs(env, tmp_path):
    runs_root = get_settings().runs_dir
    done = _stored_run("failed", runs_root / "00001-a")
    child = _stored_run("finished", runs_root / "00002-b", parent_id=done)  # resumed from its checkpoint
    assert jobs.delete(done) == f"run {done} deleted with its folder"
    assert _run(done) is None and not (runs_root / "00001-a").exists()
    with session_scope(write=False) as session:
        assert session.scalar(select(func.count()).select_from(Checkpoint).where(Checkpoint.run_id == done)) == 0
        assert session.scalar(text("SELECT count(*) FROM metrics WHERE run_id = :r"), {"r": done}) == 0
    assert _run(child).parent_id is None and (runs_root / "00002-b" / "last.pt").is_file()  # the child is whole

    # A folder another run trains in, or one outside the runs folder, is never removed.
    shared = runs_root / "00003-c"
    first, second = _stored_run("cancelled", shared), _stored_run("cancelled", shared)
    assert jobs.delete(first).endswith("stays: another run trains in it") and (shared / "last.pt").is_file()
    assert jobs.delete(second) == f"run {second} deleted with its folder" and not shared.exists()
    outside = _stored_run("finished", tmp_path / "mine")
    assert "stays (outside the runs folder" in jobs.delete(outside) and (tmp_path / "mine" / "last.pt").is_file()

    for status in ("queued", "running"):
        live = _stored_run(status, runs_root / f"live-{status}")
        with pytest.raises(jobs.JobError, match=f"is {status}; cancel it first"):
            jobs.delete(live)
        assert _run(live).status == status and (runs_root / f"live-{status}" / "last.pt").is_file()
    with pytest.raises(jobs.JobError, match="no run with id 999"):
        jobs.delete(999)


def test_app_restart_marks_orphaned_running_rows_failed(env, tiny):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def orphan(session):
        run = create_run(session, name="orphan", arch="espcn", scale=2, config=_cfg(tiny).resolved().to_dict())
        set_status(session, run.id, "running", pid=dead.pid)
        return run.id

    run_id = write_transaction(orphan)
    live = write_transaction(
        lambda s: (
            set_status(
                s, create_run(s, name="live", arch="espcn", scale=2, config={}).id, "running", pid=os.getpid()
            ).id
        )
    )
    # A fresh process (the restarted app) knows nothing of the old worker but its pid.
    code = "from srweb.train import jobs; print(jobs.reap())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"[{run_id}]"
    run = _run(run_id)
    assert run.status == "failed" and run.error == f"worker died: pid {dead.pid} is gone"
    assert _run(live).status == "running"  # a live process is left alone
    write_transaction(lambda s: set_status(s, live, "cancelled"))


def test_a_run_whose_worker_cannot_start_fails_and_the_queue_goes_on(env, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("SRWEB_MAX_PARALLEL_JOBS", "0")
    get_settings.cache_clear()
    blocked, fine = jobs.submit(_cfg(tiny)), jobs.submit(_cfg(tiny, iterations=10))
    (tmp_path / "file").write_text("not a folder")
    write_transaction(lambda s: setattr(get_run(s, blocked), "run_dir", str(tmp_path / "file" / "run")))
    monkeypatch.setenv("SRWEB_MAX_PARALLEL_JOBS", "1")
    get_settings.cache_clear()
    assert jobs.dispatch() == [fine]
    run = _run(blocked)
    assert run.status == "failed" and run.error.startswith("could not start the worker: ")
    _wait(fine, lambda r: r.status == "finished", "the next run to finish", reap=True)


def test_a_paused_run_taken_for_dead_records_its_real_outcome(env, tiny):
    from datetime import timedelta

    from srweb.track.runs import mark_orphans
    from srweb.train.trainer import TrainResult
    from srweb.train.session import record_result

    run_id = write_transaction(
        lambda s: (
            set_status(
                s, create_run(s, name="paused", arch="espcn", scale=2, config={}).id, "running", pid=os.getpid()
            ).id
        )
    )
    later = _run(run_id).heartbeat_at + timedelta(minutes=11)
    assert write_transaction(lambda s: mark_orphans(s, now=later)) == [run_id]  # no heartbeat for 11 min
    trainer = type("T", (), {"run_dir": Path("run"), "export_dir": Path("run/export")})()
    write_transaction(lambda s: record_result(s, run_id, trainer, TrainResult("finished", 20, 30.0, 1.0)))
    run = _run(run_id)
    assert (run.status, run.error, run.step, run.best_psnr) == ("finished", None, 20, 30.0)


# --- the acceptance scenario of the issue -------------------------------------------------------


@pytest.mark.slow
def test_acceptance_edsr_baseline_general100_cancel_resume_finish(env, monkeypatch):
    # "General-100" by name, from a data root the workers inherit (made here from the sample photos).
    shutil.copytree(hr_photos(), env / "data" / "General-100")
    monkeypatch.setenv("SRWEB_DATA_ROOT", str(env / "data"))
    get_settings.cache_clear()
    cfg = TrainConfig(
        model="edsr-baseline",
        scale=2,
        overrides={"num_blocks": 2, "num_features": 16},
        data="General-100",
        val_data="Set5",
        patch_size=24,
        batch_size=4,
        iterations=80,
        val_interval=40,
        ckpt_interval=40,
        precision="fp32",
        tag="acceptance",
    )
    run_id = jobs.submit(cfg)
    run_dir = Path(_run(run_id).run_dir)
    _wait_checkpoint(run_dir, above=0, timeout=240)  # step 40: validated on Set5, then checkpointed
    assert _run(run_id).status == "running"
    jobs.cancel(run_id)
    run = _done(run_id, "cancelled", timeout=240)
    stopped = run.step
    assert 40 <= stopped < 80 and run.best_psnr is not None
    jobs.resume(run_id)
    run = _done(run_id, timeout=240)

    assert (run.status, run.step, run.total_steps, run.error) == ("finished", 80, 80, None)
    assert run.name == "edsr-baseline-x2_f16b2_p24_b4_lr1e-4" and run.config["data"] == "General-100"
    assert run.weights_name == "edsr-baseline-x2.acceptance"
    with session_scope(write=False) as session:
        series = metric_series(session, run_id, wide=True)
    val = series["val_psnr"].dropna()
    assert list(val.index) == [40, 80] and run.best_psnr == pytest.approx(val.max())
    assert all(_metric_steps(run_id, name) == sorted(set(_metric_steps(run_id, name))) for name in ("loss", "val_psnr"))
    kinds = [kind for kind, _, _ in _checkpoints(run_id)]
    assert kinds == ["last", "last", "export"]  # the cancel, then the finish
    export = Path(_checkpoints(run_id)[-1][2])
    model, card = srweb.load_weights(str(export))
    (metric,) = card.metrics
    assert metric["dataset"] == "Set5" and metric["protocol"]["crop_border"] == 2
    assert card.num_params == sum(p.numel() for p in model.parameters())
    log = jobs.log_tail(run_id, 400)
    assert f"cancelled at step {stopped}" in log and "finished at step 80" in log


def test_parallel_training_workers_split_the_cores():
    """Each worker of ``SRWEB_MAX_PARALLEL_JOBS`` gets its share of torch's threads. Seen on two cores:
    an espcn-x4 run beside a second run, both with two threads, trained at about 1 it/s; with one
    thread each, at 21 it/s."""
    before = torch.get_num_threads()
    settings = dataclasses.replace(get_settings(), threads=None)
    try:
        torch.set_num_threads(4)
        assert apply_threads(settings) == 4  # one job at a time keeps torch's default
        assert apply_threads(settings, sharers=2) == 2
        assert apply_threads(settings, sharers=3) == 1  # never below one
        torch.set_num_threads(4)
        assert apply_threads(dataclasses.replace(settings, threads=3), sharers=2) == 3  # SRWEB_THREADS wins
    finally:
        torch.set_num_threads(before)
