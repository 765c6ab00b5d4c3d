"""Training on other machines: ``srweb worker`` processes, a PostgreSQL queue, a shared artifact folder.

Two workers with separate state folders stand for two machines. They share only the PostgreSQL
server (tracker + procrastinate queue) and the artifact folder, as machines would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, child_env
from PIL import Image
from sqlalchemy import text

from srweb.train.remote import POLL_S

TIMEOUT = 240  # seconds; a loaded 2-core machine starts a torch process in ~5-10 s


@pytest.fixture
def cluster(pg_server, tmp_path, monkeypatch):
    """One PostgreSQL database, one artifact folder, generated training images; this process
    (the control plane) points at them."""
    from srweb.config import get_settings
    from srweb.track.db import dispose_engine, init_db

    url = pg_server.create_database()
    artifacts = tmp_path / "artifacts"
    data = _images(tmp_path / "data", 6, 64)
    env = child_env(
        tmp_path / "control", SRWEB_DATABASE_URL=url, SRWEB_ARTIFACTS_URL=str(artifacts), SRWEB_DEVICE="cpu"
    )
    for name in (
        "SRWEB_STATE_DIR",
        "SRWEB_WEIGHTS_DIR",
        "SRWEB_RUNS_DIR",
        "SRWEB_DATABASE_URL",
        "SRWEB_ARTIFACTS_URL",
        "SRWEB_DEVICE",
    ):
        monkeypatch.setenv(name, env[name])
    get_settings.cache_clear()
    init_db()
    workers: list[subprocess.Popen] = []
    yield {"url": url, "artifacts": artifacts, "data": data, "root": tmp_path, "workers": workers}
    for proc in workers:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    dispose_engine(url)
    pg_server.drop_database(url)
    get_settings.cache_clear()


def _images(folder: Path, count: int, size: int) -> str:
    """Smooth random RGB images (a learnable signal, unlike white noise)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BICUBIC).save(folder / f"img{i}.png")
    return str(folder)


def _start_worker(cluster, name: str) -> subprocess.Popen:
    """``srweb worker --name NAME`` with its own state folders (its own "machine")."""
    root = cluster["root"] / name
    env = child_env(
        root,
        SRWEB_DATABASE_URL=cluster["url"],
        SRWEB_ARTIFACTS_URL=str(cluster["artifacts"]),
        SRWEB_DEVICE="cpu",
        PYTHONPATH=str(REPO),
    )
    log = open(cluster["root"] / f"{name}.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "srweb.cli", "worker", "--name", name],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    cluster["workers"].append(proc)
    return proc


def _log(cluster, name: str) -> str:
    return (cluster["root"] / f"{name}.log").read_text(errors="replace")


def _cfg(data: str, **kw):
    from srweb.train.config import TrainConfig

    values = dict(
        model="espcn",
        scale=2,
        data=data,
        val_data=data,
        patch_size=8,
        batch_size=4,
        iterations=40,
        val_interval=20,
        ckpt_interval=10,
        precision="fp32",
    )
    values.update(kw)
    return TrainConfig(**values)


def _runs(ids=None) -> dict:
    from srweb.track.db import session_scope
    from srweb.track.runs import list_runs

    with session_scope(write=False) as session:
        return {r.id: r for r in list_runs(session, limit=None) if ids is None or r.id in ids}


def _wait(predicate, what: str, timeout: float = TIMEOUT, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def _alive_workers() -> list[str]:
    from srweb.track.db import session_scope
    from srweb.track.workers import alive_workers

    with session_scope(write=False) as session:
        return [w.name for w in alive_workers(session)]


def _checkpoint_step(path: Path) -> int:
    import torch

    try:  # pushed with a .part name and moved: a read sees a whole file
        return torch.load(path, weights_only=True)["step"]
    except (FileNotFoundError, EOFError, RuntimeError):
        return -1


def test_srweb_worker_refuses_sqlite(tmp_path):
    env = child_env(tmp_path, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-m", "srweb.cli", "worker"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and "needs a PostgreSQL database" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_workers_four_runs_one_worker_killed(cluster, artifacts):
    """4 queued runs, 2 workers; the worker training the long run is SIGKILLed after a checkpoint
    reached the store: the run returns to the queue within 60 s, the other worker resumes it from
    that checkpoint, every run finishes exactly once and no step is recorded twice."""
    from srweb.train import jobs

    a = _start_worker(cluster, "machine-a")
    _wait(lambda: "machine-a" in _alive_workers(), "machine-a to register")
    data = cluster["data"]
    long_id = jobs.submit(_cfg(data, iterations=3000, val_interval=1000, ckpt_interval=50, tag="long"))
    started = _wait(lambda: _runs([long_id])[long_id].started_at, "machine-a to start the long run")
    latency = (started - _runs([long_id])[long_id].created_at).total_seconds()  # queued -> claimed by a worker
    others = [jobs.submit(_cfg(data, iterations=40, tag=f"short{i}")) for i in range(3)]
    _start_worker(cluster, "machine-b")

    run = _runs([long_id])[long_id]
    assert run.worker == "machine-a" and run.status == "running"
    stored = Path(run.run_dir) / "last.pt"
    assert Path(run.run_dir).is_relative_to(cluster["artifacts"])
    killed_at_step = _wait(lambda: _checkpoint_step(stored) >= 50 and _checkpoint_step(stored), "a pushed checkpoint")
    os.killpg(a.pid, signal.SIGKILL)  # the machine is gone: worker and its trainer
    killed = time.monotonic()
    a.wait(30)

    _wait(
        lambda: _runs([long_id])[long_id].status == "queued" or _runs([long_id])[long_id].worker == "machine-b",
        "the killed run back in the queue",
        timeout=60,
    )
    back = time.monotonic() - killed
    _wait(
        lambda: (r := _runs([long_id])[long_id]).worker == "machine-b" and r.status == "running",
        "machine-b to resume the killed run",
        timeout=TIMEOUT,
    )
    resumed = time.monotonic() - killed
    runs = _wait(
        lambda: (rs := _runs([long_id, *others])) and all(r.status == "finished" for r in rs.values()) and rs,
        "every run to finish",
        timeout=600,
        poll=1,
    )

    # A worker says "finished" once it has pushed the run's folder, just after the run's row says so.
    def logs() -> str:
        return _log(cluster, "machine-a") + _log(cluster, "machine-b")

    _wait(lambda: all(f"run {run_id}: finished" in logs() for run_id in runs), "the workers to settle", timeout=60)
    time.sleep(2 * POLL_S)
    assert f"run {long_id}: resuming from its last checkpoint" in _log(cluster, "machine-b")
    for run_id, run in runs.items():
        assert run.step == run.total_steps and run.weights_name
        assert logs().count(f"run {run_id}: finished") == 1, f"run {run_id} did not finish exactly once"
        assert logs().count(f"run {run_id}: training in") + logs().count(f"run {run_id}: resuming") == (
            2 if run_id == long_id else 1
        )
        assert (Path(run.run_dir) / "export" / f"{run.weights_name}.safetensors").is_file()  # pushed to the store
    from srweb.track.db import session_scope

    with session_scope(write=False) as session:
        twice = session.execute(
            text("SELECT run_id, name, step FROM metrics GROUP BY run_id, name, step HAVING count(*) > 1")
        ).all()
        loss_steps = (
            session.execute(
                text("SELECT step FROM metrics WHERE run_id = :id AND name = 'loss' ORDER BY step"), {"id": long_id}
            )
            .scalars()
            .all()
        )
    assert twice == []
    assert loss_steps and loss_steps[-1] >= 3000 - 50 and any(s > killed_at_step for s in loss_steps)
    from srweb.weights.exports import export_run_weights
    from srweb.weights.files import list_weights

    card = export_run_weights(long_id)  # the Runs tab's Export, on the control plane
    assert card.name in [c.name for c in list_weights()] and card.training["run_id"] == long_id
    figures = {
        "queue_latency_s": round(latency, 2),
        "kill_to_queued_s": round(back, 2),
        "kill_to_resumed_s": round(resumed, 2),
        "killed_at_checkpoint_step": killed_at_step,
    }
    (artifacts / "workers-faults.json").write_text(json.dumps(figures, indent=2))
    print(f"\nworkers: {figures}")
    assert back < 60


def _cli(cluster, *args: str) -> str:
    env = child_env(
        cluster["root"] / "control",
        SRWEB_DATABASE_URL=cluster["url"],
        SRWEB_ARTIFACTS_URL=str(cluster["artifacts"]),
        PYTHONPATH=str(REPO),
    )
    out = subprocess.run(
        [sys.executable, "-m", "srweb.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cancel_reaches_the_worker_and_sigterm_requeues(cluster):
    """Cancel stops a run on a worker within 10 s; SIGTERM makes a worker checkpoint its run, put it
    back in the queue and exit 0. ``srweb workers --json`` and ``srweb jobs list --json`` show both."""
    from srweb.train import jobs

    worker = _start_worker(cluster, "machine-c")
    _wait(lambda: "machine-c" in _alive_workers(), "machine-c to register")
    data = cluster["data"]
    first = jobs.submit(_cfg(data, iterations=100000, val_interval=100000, ckpt_interval=50, tag="cancelme"))
    run = _wait(lambda: (r := _runs([first])[first]).status == "running" and r.step > 0 and r, "training")
    listed = {w["name"]: w for w in json.loads(_cli(cluster, "workers", "--json"))}
    assert listed["machine-c"]["run_id"] == first and listed["machine-c"]["device"] == "cpu"
    row = next(r for r in json.loads(_cli(cluster, "jobs", "list", "--json")) if r["id"] == first)
    assert (row["status"], row["worker"], row["iterations"]) == ("running", "machine-c", 100000)
    assert row["step"] >= 0 and row["name"] == run.name

    assert jobs.cancel(first) == "cancelling"
    cancelled = time.monotonic()
    run = _wait(lambda: (r := _runs([first])[first]).status == "cancelled" and r, "the cancel", timeout=30)
    assert time.monotonic() - cancelled < 10 and 0 < run.step < 100000

    second = jobs.submit(_cfg(data, iterations=100000, val_interval=100000, ckpt_interval=50, tag="sigterm"))
    _wait(lambda: _runs([second])[second].step > 0, "the second run to train")
    os.killpg(worker.pid, signal.SIGTERM)
    assert worker.wait(60) == 0
    run = _runs([second])[second]
    assert run.status == "queued" and run.step > 0 and run.error is None
    assert "machine-c" not in _alive_workers()
    assert (Path(run.run_dir) / "last.pt").is_file()  # its checkpoint is in the store for the next worker


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_postgresql_restarted_during_a_run(cluster, pg_server):
    """The server goes away mid-run and comes back: the worker says so, reconnects, and the run
    finishes once, every step recorded once."""
    from srweb.track.db import dispose_engine
    from srweb.train import jobs

    _start_worker(cluster, "machine-d")
    _wait(lambda: "machine-d" in _alive_workers(), "machine-d to register")
    run_id = jobs.submit(_cfg(cluster["data"], iterations=2500, val_interval=500, ckpt_interval=100, tag="restart"))
    _wait(lambda: _runs([run_id])[run_id].step > 100, "the run to train")
    pg_server.stop()
    time.sleep(5)
    pg_server.start()
    dispose_engine(cluster["url"])  # this process's pooled connections died with the server
    run = _wait(
        lambda: (r := _runs([run_id])[run_id]).status in ("finished", "failed") and r,
        "the run to end",
        timeout=400,
        poll=1,
    )
    assert run.status == "finished" and run.step == 2500, run.error
    _wait(lambda: f"run {run_id}: finished" in _log(cluster, "machine-d"), "the worker to settle", timeout=60)
    log = _log(cluster, "machine-d")
    assert "cannot reach the database" in log or "lost the queue" in log
    from srweb.track.db import session_scope

    with session_scope(write=False) as session:
        twice = session.execute(
            text("SELECT step FROM metrics WHERE run_id = :id GROUP BY name, step HAVING count(*) > 1"), {"id": run_id}
        ).all()
    assert twice == []
    assert log.count(f"run {run_id}: training") + log.count(f"run {run_id}: resuming") == 1


def _jobs_of(run_id: int) -> list[str]:
    from srweb.train.queue import QUEUE, opened

    with opened() as app:
        return [job.status for job in app.job_manager.list_jobs(queue=QUEUE, lock=f"run-{run_id}")]


def test_queue_without_workers_cancel_resume_delete(cluster):
    """With PostgreSQL the control plane only queues: a procrastinate job per queued run, dropped by
    cancel, queued again by resume; a deleted newest run's id is never given again."""
    from srweb.train import jobs

    data = cluster["data"]
    run_id = jobs.submit(_cfg(data))
    assert _runs([run_id])[run_id].status == "queued" and _jobs_of(run_id) == ["todo"]
    assert jobs.dispatch() == []  # nothing starts here
    assert jobs.cancel(run_id) == "cancelled" and _jobs_of(run_id) == ["cancelled"]
    assert jobs.resume(run_id) == run_id
    assert _runs([run_id])[run_id].status == "queued" and sorted(_jobs_of(run_id)) == ["cancelled", "todo"]
    with pytest.raises(jobs.JobError, match="cancel it first"):
        jobs.delete(run_id)
    jobs.cancel(run_id)
    assert "deleted" in jobs.delete(run_id)
    assert jobs.submit(_cfg(data, tag="next")) > run_id
    # Data only the GPU machines have: queued here, checked by the worker that trains it.
    elsewhere = jobs.submit(_cfg("/data/on/the/gpu/boxes/DIV2K", tag="elsewhere"))
    assert _runs([elsewhere])[elsewhere].config["data"] == "/data/on/the/gpu/boxes/DIV2K"
    from srweb.train.config import ConfigError

    with pytest.raises(ConfigError, match="patch_size"):  # the config itself is still checked here
        jobs.submit(_cfg(data, patch_size=0))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_app_runs_its_local_workers_and_stops_them(cluster, tmp_path):
    """``SRWEB_LOCAL_WORKERS=1`` with PostgreSQL: the app starts one ``srweb worker``, which trains
    a run queued through the app's database; stopping the app stops the worker."""
    import socket

    from conftest import running_app

    from srweb.train import jobs

    env = {
        "SRWEB_DATABASE_URL": cluster["url"],
        "SRWEB_ARTIFACTS_URL": str(cluster["artifacts"]),
        "SRWEB_LOCAL_WORKERS": "1",
    }
    name = f"{socket.gethostname()}-app-1"
    with running_app(tmp_path / "app", env, artifact="app-local-workers.log") as server:
        server.database_url = cluster["url"]
        _wait(lambda: name in _alive_workers(), "the app's worker to register", timeout=120)
        run_id = jobs.submit(_cfg(cluster["data"], iterations=20, tag="app"))
        run = _wait(lambda: (r := _runs([run_id])[run_id]).status == "finished" and r, "the run", timeout=180)
        assert run.worker == name
    _wait(lambda: name not in _alive_workers(), "the worker to stop with the app", timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_worker_with_two_processes_trains_under_torchrun(cluster):
    """``srweb worker --gpus 2`` runs the trainer under torchrun (DDP; gloo on a CPU-only machine):
    the run finishes, rank 0 alone records it, each step once."""
    from srweb.track.db import session_scope
    from srweb.train import jobs

    root = cluster["root"] / "machine-ddp"
    env = child_env(
        root,
        SRWEB_DATABASE_URL=cluster["url"],
        SRWEB_ARTIFACTS_URL=str(cluster["artifacts"]),
        SRWEB_DEVICE="cpu",
        PYTHONPATH=str(REPO),
    )
    with open(cluster["root"] / "machine-ddp.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "srweb.cli", "worker", "--name", "machine-ddp", "--gpus", "2"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cluster["workers"].append(proc)
    run_id = jobs.submit(_cfg(cluster["data"], iterations=40, tag="ddp"))
    run = _wait(lambda: (r := _runs([run_id])[run_id]).status in ("finished", "failed") and r, "the DDP run")
    assert run.status == "finished" and run.step == 40 and run.worker == "machine-ddp", run.error
    _wait(lambda: f"run {run_id}: finished" in _log(cluster, "machine-ddp"), "the worker to settle", timeout=60)
    assert "rank 0 of 2 processes" in (Path(run.run_dir) / "train.log").read_text(errors="replace")
    assert (Path(run.run_dir) / "export" / f"{run.weights_name}.safetensors").is_file()
    with session_scope(write=False) as session:
        twice = session.execute(
            text("SELECT step FROM metrics WHERE run_id = :id GROUP BY name, step HAVING count(*) > 1"), {"id": run_id}
        ).all()
    assert twice == []


def test_a_worker_without_its_database_says_so_and_retries(tmp_path):
    """No server at the URL: one line per try, waits growing, the worker keeps trying and stops
    cleanly on SIGTERM."""
    from conftest import _free_port

    url = f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/nowhere"
    env = child_env(tmp_path, SRWEB_DATABASE_URL=url, SRWEB_DEVICE="cpu", PYTHONPATH=str(REPO))
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "srweb.cli", "worker", "--name", "offline"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait(lambda: log_path.read_text().count("cannot reach the database") >= 2, "two tries", timeout=90)
        assert proc.poll() is None  # still trying
        lines = [line for line in log_path.read_text().splitlines() if line.strip()]
        assert all(line.startswith("srweb worker offline: cannot reach the database") for line in lines), lines
        assert "retrying in 1 s" in lines[0] and "retrying in 2 s" in lines[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
