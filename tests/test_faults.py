"""Faults: a worker killed mid-step, the app killed under a running job, a full disk while
checkpointing, and the database held by another writer.

The basic job lifecycle (cancel, resume, SIGKILL then reap) is in ``test_jobs.py``; here the
questions are whether the database stays intact, whether every run can be resumed from a
good checkpoint, and whether what the app shows is the truth about the worker.
"""

from __future__ import annotations

import copy
import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import start_app, stop_app
from PIL import Image
from sqlalchemy import func, select, text

from srweb.config import get_settings
from srweb.track import runs as track_runs
from srweb.track.db import dispose_engine, session_scope, write_transaction
from srweb.track.runs import get_run
from srweb.track.schema import Metric, Run
from srweb.train import jobs, trainer
from srweb.train.config import TrainConfig

TIMEOUT = 120  # s; a torch worker takes 5-10 s to start on this loaded 2-core machine


def _tiny_data(folder: Path, count: int = 4, size: int = 48) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        a = torch.linspace(0, 1, size * size * 3).reshape(size, size, 3).roll(i * 7, 0)
        Image.fromarray((a.numpy() * 255).astype("uint8")).save(folder / f"img{i}.png")
    return str(folder)


def _cfg(data: str, **kw) -> TrainConfig:
    values = dict(
        model="espcn",
        scale=2,
        data=data,
        val_data=None,
        patch_size=8,
        batch_size=4,
        iterations=300,
        val_interval=10_000,
        ckpt_interval=1,
        precision="fp32",
        device="cpu",
    )
    values.update(kw)
    return TrainConfig(**values)


def _integrity(url: str | None = None) -> tuple[str, list]:
    with session_scope(url, write=False) as session:
        return (
            session.execute(text("PRAGMA integrity_check")).scalar(),
            session.execute(text("PRAGMA foreign_key_check")).all(),
        )


def _run(run_id: int, url: str | None = None) -> Run:
    with session_scope(url, write=False) as session:
        return get_run(session, run_id)


def _wait(what: str, predicate, timeout: float = TIMEOUT, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


@pytest.fixture
def env(jobs_state):
    return jobs_state


# --- a worker killed mid-step ---------------------------------------------------------------------


def _stale_temps(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob(".*.tmp")) + sorted(run_dir.glob("*.tmp"))


def test_worker_killed_mid_step_leaves_a_sound_database_and_a_resumable_run(env):
    """A checkpoint every step and metrics every 10: a SIGKILL lands in the middle of writes."""
    run_id = jobs.submit(_cfg(_tiny_data(env / "data"), iterations=400))
    run = _wait("the worker to train", lambda: (r := _run(run_id)).status == "running" and r.step >= 20 and r)
    run_dir = Path(run.run_dir)
    os.kill(run.pid, signal.SIGKILL)
    run = _wait(
        "the run to be marked failed", lambda: jobs.reap() and (r := _run(run_id)).status == "failed" and r, timeout=15
    )
    assert run.error == "worker died: killed by signal 9"
    assert _integrity() == ("ok", [])

    saved_bytes = (run_dir / "last.pt").read_bytes()
    saved = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)  # never half written
    killed_at = int(saved["step"])
    assert 1 <= killed_at < 400
    with session_scope(write=False) as session:
        logged = session.scalars(select(Metric.step).where(Metric.run_id == run_id, Metric.name == "loss")).all()
    assert logged == sorted(logged) and all(s % 10 == 0 for s in logged)

    # What a kill during torch.save leaves behind (whether this kill did or not): a temp file.
    (run_dir / ".last.pt.k1ll3d.tmp").write_bytes(saved_bytes[: len(saved_bytes) // 2])
    jobs.resume(run_id)
    run = _wait("the resumed run to finish", lambda: (r := _run(run_id)).status in ("finished", "failed") and r)
    assert (run.status, run.step, run.error) == ("finished", 400, None), jobs.log_tail(run_id)
    assert f"run {run_id} finished at step 400" in jobs.log_tail(run_id)
    with session_scope(write=False) as session:
        steps = session.scalars(
            select(Metric.step).where(Metric.run_id == run_id, Metric.name == "loss").order_by(Metric.id)
        ).all()
    assert steps == sorted(set(steps)) and steps[-1] == 400  # one curve, continued after the kill
    assert _integrity() == ("ok", [])
    assert not _stale_temps(run_dir), _stale_temps(run_dir)  # a temp file the kill left was swept on resume


# --- the app killed (SIGKILL) and restarted while a job runs --------------------------------------


def _shown(client, run_id: int) -> dict:
    """The run's row as the app's Runs table shows it (``/runs_list``)."""
    table = client.predict("any", "any", "any", "", "id", True, api_name="/runs_list")[0]
    rows = [dict(zip(table["headers"], row)) for row in table["data"]]
    return next(r for r in rows if int(r["id"]) == run_id)


def test_app_killed_and_restarted_shows_the_truth_about_the_worker(tmp_path):
    """The worker runs in its own session: it survives the app. A restarted app must show it as
    running while it lives and as failed once it died while no app was up."""
    from gradio_client import Client

    data = _tiny_data(tmp_path / "data")
    env = {"OMP_NUM_THREADS": "1"}
    first = start_app(tmp_path, env, log_name="app-1.log")
    url = first.database_url
    try:
        form = [
            "espcn",
            2,
            "sample",
            data,
            "none",
            8,
            4,
            100_000,
            1e-3,
            "adam",
            "constant",
            "l2",
            "fp32",
            "cpu",
            10_000,
            "none",
            False,
            0.0,
            "none",
            0.5,
        ]
        message = Client(first.url, verbose=False).predict(*form, api_name="/train_launch")[0]
        run_id = int(message.split("#")[1].rstrip("."))
        run = _wait("the worker to train", lambda: (r := _run(run_id, url)).status == "running" and r.step > 0 and r)
        worker = run.pid
    finally:
        first.process.kill()  # SIGKILL: no shutdown code runs
        first.process.wait()
    try:
        os.kill(worker, 0)  # the worker outlived the app
        second = start_app(tmp_path, env, log_name="app-2.log")
        try:
            client = Client(second.url, verbose=False)
            before = _shown(client, run_id)
            assert before["status"] == "running"
            step = _run(run_id, url).step
            _wait("the adopted worker to make progress", lambda: _run(run_id, url).step > step, timeout=30)
            time.sleep(2.5)  # a watcher tick of the restarted app: it must not reap a live worker
            assert _shown(client, run_id)["status"] == "running"
        finally:
            second.process.kill()
            second.process.wait()
        os.kill(worker, signal.SIGKILL)  # dies while no app is up
        _wait("the worker to be gone", lambda: not jobs._alive(worker), timeout=10)
        third = start_app(tmp_path, env, log_name="app-3.log")
        try:
            shown = _shown(Client(third.url, verbose=False), run_id)  # reaped at start-up, before serving
            assert shown["status"] == "failed"
            assert _run(run_id, url).error == f"worker died: pid {worker} is gone"
            assert _integrity(url) == ("ok", [])
            assert torch.load(Path(_run(run_id, url).run_dir) / "last.pt", weights_only=True)["step"] > 0
        finally:
            stop_app(third)
    finally:
        try:
            os.kill(worker, signal.SIGKILL)
        except ProcessLookupError:
            pass
        dispose_engine(url)


# --- disk full while saving a checkpoint ----------------------------------------------------------


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    cfg = _cfg(
        _tiny_data(root / "data"),
        iterations=20,
        ckpt_interval=10,
        val_data=_tiny_data(root / "val", 2, 32),
        val_interval=10,
    )
    t = trainer.Trainer(cfg, root / "run", progress=False)
    t.train()
    return t


@pytest.fixture
def trained(trained_once, tmp_path):
    """A Trainer that finished 20 steps (checkpoints at 10 and 20, best weights saved), in a
    run folder of this test's own."""
    t = copy.copy(trained_once)
    t.run_dir = tmp_path / "run"
    shutil.copytree(trained_once.run_dir, t.run_dir)
    return t


def _half_written(real):
    """``torch.save`` / ``save_model`` that writes part of the file, then finds the disk full."""

    def save(obj, path, *args, **kwargs):
        real(obj, path, *args, **kwargs)
        with open(path, "r+b") as fh:
            fh.truncate(max(1, os.path.getsize(path) // 3))
        _enospc()

    return save


@pytest.mark.parametrize("where", ["torch.save", "os.replace"])
def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(trained, monkeypatch, where):
    run_dir = trained.run_dir
    before = (run_dir / "last.pt").read_bytes()
    if where == "torch.save":
        monkeypatch.setattr(trainer.torch, "save", _half_written(torch.save))
    else:
        monkeypatch.setattr(trainer.os, "replace", _enospc)
    with pytest.raises(OSError) as caught:
        trained.save_checkpoint(25, None)
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert (run_dir / "last.pt").read_bytes() == before
    assert torch.load(run_dir / "last.pt", weights_only=True)["step"] == 20
    assert not _stale_temps(run_dir), _stale_temps(run_dir)


@pytest.mark.parametrize("where", ["save_model", "os.replace"])
def test_disk_full_while_saving_best_weights_keeps_the_previous_file(trained, monkeypatch, where):
    from safetensors.torch import load_file

    run_dir = trained.run_dir
    before = (run_dir / "best.safetensors").read_bytes()
    if where == "save_model":
        monkeypatch.setattr(trainer, "save_model", _half_written(trainer.save_model))
    else:
        monkeypatch.setattr(trainer.os, "replace", _enospc)
    with pytest.raises(OSError):
        trained._save_best()
    monkeypatch.undo()
    assert (run_dir / "best.safetensors").read_bytes() == before
    assert load_file(run_dir / "best.safetensors")
    assert not _stale_temps(run_dir), _stale_temps(run_dir)


def test_disk_full_mid_training_fails_the_run_and_resume_continues(trained, monkeypatch):
    """The step-30 checkpoint hits a full disk: training stops with the error; after space is
    freed a new Trainer resumes from step 20, the last good checkpoint."""
    cfg = TrainConfig.from_dict({**trained.cfg.to_dict(), "iterations": 40})
    calls = []
    real = torch.save

    def save(obj, path, *args, **kwargs):
        calls.append(obj["step"])
        if obj["step"] == 30:
            _half_written(real)(obj, path, *args, **kwargs)
        real(obj, path, *args, **kwargs)

    monkeypatch.setattr(trainer.torch, "save", save)
    with pytest.raises(OSError):
        trainer.Trainer(cfg, trained.run_dir, progress=False).train()
    assert calls == [30] and torch.load(trained.run_dir / "last.pt", weights_only=True)["step"] == 20
    monkeypatch.undo()
    resumed = trainer.Trainer(cfg, trained.run_dir, progress=False)
    result = resumed.train()
    assert (result.status, result.step) == ("finished", 40)
    assert not _stale_temps(trained.run_dir)


# --- the database held by another writer ----------------------------------------------------------


HOLDER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
con.execute("UPDATE runs SET name = name")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("COMMIT")
"""


@pytest.mark.parametrize("busy_timeout", [30.0, 0.3], ids=["busy-wait", "retry-after-busy-error"])
def test_writes_wait_for_a_writer_holding_the_lock_and_none_is_lost(env, monkeypatch, busy_timeout):
    """Another process holds ``BEGIN IMMEDIATE`` for 2.5 s while 4 threads write 10 transactions
    each. With SQLite's busy wait (30 s) they queue up; with a short one they get "database is
    locked" and ``with_retry`` retries them. Either way every write lands, once."""
    from srweb.track import db

    dispose_engine()
    monkeypatch.setattr(db, "BUSY_TIMEOUT_S", busy_timeout)
    run_id = write_transaction(
        lambda s: (
            track_runs.set_status(
                s, track_runs.create_run(s, name="locked", arch="espcn", scale=2, config={}).id, "running"
            ).id
        )
    )
    path = get_settings().database_url.removeprefix("sqlite:///")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path, "2.5"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        errors, durations = [], []

        def writer(k: int) -> None:
            for i in range(10):
                started = time.monotonic()
                try:
                    write_transaction(
                        lambda s: (
                            track_runs.log_metrics(s, run_id, k * 100 + i, {"loss": 0.1, "lr": 1.0}),
                            track_runs.heartbeat(s, run_id, step=k * 100 + i),
                        )
                    )
                except Exception as exc:
                    errors.append(repr(exc))
                durations.append(time.monotonic() - started)

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert holder.wait(30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
    assert errors == []
    assert max(durations) > 1.0  # the first writes did wait for the lock
    with session_scope(write=False) as session:
        rows = session.scalar(select(func.count(Metric.id)).where(Metric.run_id == run_id))
        steps = set(session.scalars(select(Metric.step).where(Metric.run_id == run_id)).all())
    assert rows == 4 * 10 * 2 and steps == {k * 100 + i for k in range(4) for i in range(10)}
    assert _integrity() == ("ok", [])
