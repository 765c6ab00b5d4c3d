"""Tracker database: engine setup, runs, metrics, checkpoints, evaluations, leaderboard."""

from __future__ import annotations

import math
import sqlite3
import time
from datetime import timedelta

import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from srweb.track import evals, runs
from srweb.track.db import get_engine, init_db, session_scope, with_retry, write_transaction
from srweb.track.leaderboard import leaderboard
from srweb.track.ratings import create_trial, get_or_create_rater, submit_vote
from srweb.track.schema import Metric, utcnow

PROTOCOL = {"channel": "y", "crop_border": 2, "degradation": "matlab-bicubic"}


@pytest.fixture
def url(db_url):
    """A migrated tracker database: SQLite, then PostgreSQL (``db_url`` in conftest)."""
    init_db(db_url)
    return db_url


def sqlite_only(url: str) -> None:
    if not url.startswith("sqlite"):
        pytest.skip("SQLite's own locking (PostgreSQL has row locks and MVCC instead)")


def _new_run(session, **overrides):
    values = dict(
        name="edsr-baseline-x2_f64b16_p48_b16_lr1e-4",
        arch="edsr-baseline",
        scale=2,
        config={"num_features": 64, "num_blocks": 16, "patch_size": 48, "batch_size": 16, "lr": 1e-4},
        total_steps=1000,
    )
    values.update(overrides)
    return runs.create_run(session, **values)


# --- engine and sessions --------------------------------------------------------------------


def test_sqlite_pragmas_and_idempotent_init(url, tmp_path):
    sqlite_only(url)
    init_db(url)
    init_db(url)
    assert (tmp_path / "db" / "track.sqlite").is_file()  # parent directory was created
    with get_engine(url).connect() as connection:
        pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("foreign_keys") == 1
        assert pragma("synchronous") == 1  # NORMAL
        assert pragma("busy_timeout") == 30000
        assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0007"


def test_write_sessions_begin_immediate_read_sessions_do_not(url, tmp_path):
    sqlite_only(url)
    path = tmp_path / "db" / "track.sqlite"
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with session_scope(url, write=True) as session:
        session.execute(text("SELECT 1"))  # a write session holds the write lock from its first statement
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    with session_scope(url, write=False) as session:
        session.execute(text("SELECT count(*) FROM runs"))
        other.execute("BEGIN IMMEDIATE")  # a reader does not block a writer under WAL
        other.execute("ROLLBACK")
    other.close()


def _read_then_write(url, write, signal, wait_for, timeout, results):
    try:
        with session_scope(url, write=write) as session:
            session.execute(text("SELECT count(*) FROM runs")).scalar()
            signal.set()
            wait_for.wait(timeout)
            _new_run(session)
        results.append("ok")
    except Exception as exc:
        results.append(str(exc))
    finally:
        signal.set()


@pytest.mark.parametrize("write", [True, False])
def test_read_then_write_transactions_do_not_deadlock(url, write):
    """Two overlapping read-then-write transactions: with BEGIN IMMEDIATE (write sessions) the
    second waits for the first and both commit; with BEGIN DEFERRED the second fails at once
    with "database is locked", which no busy timeout cures."""
    sqlite_only(url)
    import threading

    results: list[str] = []
    a_read, b_read, a_done = threading.Event(), threading.Event(), threading.Event()
    a = threading.Thread(target=lambda: (_read_then_write(url, write, a_read, b_read, 0.5, results), a_done.set()))
    a.start()
    a_read.wait(5)
    b = threading.Thread(target=_read_then_write, args=(url, write, b_read, a_done, 5, results))
    b.start()
    for thread in (a, b):
        thread.join(40)
    if write:
        assert results == ["ok", "ok"]
    else:
        assert results[0] == "ok" and "locked" in results[1]


def test_session_scope_commits_and_rolls_back(url):
    with pytest.raises(RuntimeError):
        with session_scope(url) as session:
            _new_run(session)
            raise RuntimeError("boom")
    with session_scope(url) as session:
        assert runs.list_runs(session) == []
        run_id = _new_run(session).id
    with session_scope(url, write=False) as session:
        assert runs.get_run(session, run_id).name.startswith("edsr-baseline-x2")


def test_with_retry_retries_only_lock_errors():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
        return "ok"

    assert with_retry(flaky, base_delay=0.001) == "ok" and len(calls) == 3

    def broken():
        calls.append(1)
        raise OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: x"))

    calls.clear()
    with pytest.raises(OperationalError):
        with_retry(broken, base_delay=0.001)
    assert len(calls) == 1

    def always_locked():
        raise OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))

    with pytest.raises(OperationalError, match="locked"):
        with_retry(always_locked, attempts=3, base_delay=0.001)


def test_write_transaction_returns_value(url):
    run_id = write_transaction(lambda s: _new_run(s).id, url)
    with session_scope(url, write=False) as session:
        assert runs.get_run(session, run_id) is not None


# --- runs --------------------------------------------------------------------------------------


def test_create_run_stores_full_config_and_utc_times(url):
    with session_scope(url) as session:
        run = _new_run(session, git_commit="abc123", device="cpu", parent_id=None, resumed_from="ckpt.pt")
        run_id = run.id
    with session_scope(url) as session:
        run = runs.get_run(session, run_id)
        assert run.status == "queued" and run.step == 0
        assert run.config["lr"] == 1e-4 and run.config["num_blocks"] == 16
        assert run.created_at.tzinfo is not None and abs((utcnow() - run.created_at).total_seconds()) < 60
        assert run.resumed_from == "ckpt.pt" and run.git_commit == "abc123"
        assert runs.get_run(session, 999) is None


def test_status_lifecycle(url):
    with session_scope(url) as session:
        run_id = _new_run(session).id
        run = runs.set_status(session, run_id, "running", pid=4242, host="box")
        assert run.started_at is not None and run.heartbeat_at is not None and run.pid == 4242
        runs.set_status(session, run_id, "running")  # same status: no-op
        run = runs.set_status(session, run_id, "failed", error="CUDA OOM")
        assert run.finished_at is not None and run.error == "CUDA OOM"
        with pytest.raises(ValueError, match="cannot go from failed to running"):
            runs.set_status(session, run_id, "running")
        with pytest.raises(ValueError, match="unknown run status"):
            runs.set_status(session, run_id, "paused")
        with pytest.raises(KeyError):
            runs.set_status(session, 999, "running")
        queued = _new_run(session).id
        assert runs.set_status(session, queued, "cancelled").finished_at is not None


def test_heartbeat_updates_step(url):
    with session_scope(url) as session:
        run_id = _new_run(session).id
        runs.set_status(session, run_id, "running")
        later = utcnow() + timedelta(seconds=5)
        runs.heartbeat(session, run_id, step=17, now=later)
    with session_scope(url) as session:
        run = runs.get_run(session, run_id)
        assert run.step == 17 and run.heartbeat_at == later


def test_log_metrics_and_series(url):
    with session_scope(url) as session:
        run_id = _new_run(session).id
        for step in range(1, 4):
            assert runs.log_metrics(session, run_id, step, {"loss": 1.0 / step, "lr": 1e-4}) == 2
        runs.log_metrics(session, run_id, 3, {"val_psnr": 30.5, "val_ssim": float("nan")})
    with session_scope(url, write=False) as session:
        long = runs.metric_series(session, run_id)
        assert list(long.columns) == ["step", "name", "value", "wall_time"]
        assert len(long) == 8
        loss = runs.metric_series(session, run_id, ["loss"])
        assert loss["step"].tolist() == [1, 2, 3] and loss["value"].tolist() == pytest.approx([1, 0.5, 1 / 3])
        wide = runs.metric_series(session, run_id, ["loss", "val_psnr", "val_ssim"], wide=True)
        assert wide.index.tolist() == [1, 2, 3]
        assert wide.loc[3, "val_psnr"] == 30.5 and math.isnan(wide.loc[1, "val_psnr"])
        assert math.isnan(wide.loc[3, "val_ssim"])  # NaN stored as NULL, read back as NaN
        empty = runs.metric_series(session, 999)
        assert empty.empty and list(empty.columns) == ["step", "name", "value", "wall_time"]


def test_list_runs_filters(url):
    with session_scope(url) as session:
        a = _new_run(session).id
        b = _new_run(session, name="espcn-x3_f64_p17_b16_lr1e-3", arch="espcn", scale=3).id
        runs.set_status(session, b, "running")
    with session_scope(url) as session:
        assert [r.id for r in runs.list_runs(session)] == [b, a]
        assert [r.id for r in runs.list_runs(session, status="running")] == [b]
        assert [r.id for r in runs.list_runs(session, status=["queued", "finished"])] == [a]
        assert [r.id for r in runs.list_runs(session, arch="espcn", scale=3)] == [b]
        assert [r.id for r in runs.list_runs(session, name_contains="_f64b16_")] == [a]
        assert runs.list_runs(session, name_contains="%") == []
        assert len(runs.list_runs(session, limit=1)) == 1


def test_checkpoints_track_best_and_export(url):
    with session_scope(url) as session:
        run_id = _new_run(session).id
        runs.add_checkpoint(session, run_id, 100, "runs/1/last.pt", psnr=30.0)
        runs.add_checkpoint(session, run_id, 200, "runs/1/best.pt", kind="best", psnr=31.5)
        runs.add_checkpoint(session, run_id, 300, "runs/1/last.pt", psnr=31.0)
        runs.add_checkpoint(
            session, run_id, 300, "weights/x.safetensors", kind="export", weights_name="edsr-baseline-x2.mine"
        )
        with pytest.raises(ValueError):
            runs.add_checkpoint(session, run_id, 1, "x", kind="weird")
    with session_scope(url) as session:
        run = runs.get_run(session, run_id)
        assert run.best_psnr == 31.5 and run.weights_name == "edsr-baseline-x2.mine"
        assert [c.step for c in run.checkpoints] == [100, 200, 300, 300]
        assert runs.latest_checkpoint(session, run_id).step == 300
        assert runs.latest_checkpoint(session, run_id, "best").path == "runs/1/best.pt"
        assert runs.latest_checkpoint(session, 999) is None


def test_mark_orphans(url):
    now = utcnow()
    with session_scope(url) as session:
        dead = runs.set_status(session, _new_run(session).id, "running", pid=111, host="here").id
        alive = runs.set_status(session, _new_run(session).id, "running", pid=222, host="here").id
        stale = runs.set_status(
            session, _new_run(session).id, "running", pid=222, host="here", now=now - timedelta(hours=1)
        ).id
        remote = runs.set_status(session, _new_run(session).id, "running", pid=111, host="elsewhere").id
        queued = _new_run(session).id
        marked = runs.mark_orphans(session, lambda pid: pid == 222, host="here", now=now)
        assert marked == [dead, stale]
    with session_scope(url) as session:
        assert runs.get_run(session, dead).error.startswith("worker died: pid 111")
        assert runs.get_run(session, stale).error.startswith("worker died: no heartbeat")
        assert runs.get_run(session, dead).status == "failed"
        assert runs.get_run(session, alive).status == "running"
        assert runs.get_run(session, remote).status == "running"  # another host's pid is not ours to check
        assert runs.get_run(session, queued).status == "queued"
        assert runs.mark_orphans(session, lambda pid: True, host="here", now=now) == []


def test_pid_alive():
    import os

    assert runs.pid_alive(os.getpid())
    assert not runs.pid_alive(2**22 + 12345)


def test_metrics_buffer_flushes_by_rows_time_and_close(url):
    with session_scope(url) as session:
        run_id = runs.set_status(session, _new_run(session).id, "running").id
    clock = [0.0]
    buffer = runs.MetricsBuffer(run_id, url=url, max_rows=4, max_interval=10.0, clock=lambda: clock[0])
    count = lambda: session_count(url, run_id)  # noqa: E731
    buffer.log(1, {"loss": 1.0})
    buffer.log(2, {"loss": 0.9})
    assert buffer.pending == 2 and count() == 0
    buffer.log(3, {"loss": 0.8, "lr": 1e-4})  # 4 rows: full
    assert buffer.pending == 0 and count() == 4
    buffer.log(4, {"loss": 0.7})
    clock[0] = 11.0
    buffer.log(5, {"loss": 0.6})  # interval passed
    assert count() == 6
    with buffer:
        buffer.log(6, {"loss": 0.5})
    assert count() == 7
    with session_scope(url) as session:
        assert runs.get_run(session, run_id).step == 6  # the flush stamped the heartbeat


def session_count(url, run_id):
    with session_scope(url, write=False) as session:
        return session.query(Metric).filter(Metric.run_id == run_id).count()


def test_metrics_buffer_cost(url):
    """Every buffered row lands; the amortised cost of one log() call (the figure MetricsBuffer's
    docstring quotes) is printed, not asserted: tests never time anything (it flaked on a loaded box)."""
    with session_scope(url) as session:
        run_id = runs.set_status(session, _new_run(session).id, "running").id
    calls = 5000
    start = time.perf_counter()
    with runs.MetricsBuffer(run_id, url=url, max_rows=256) as buffer:
        for step in range(calls):
            buffer.log(step, {"loss": 0.1, "lr": 1e-4, "grad_norm": 2.0})
    per_call = (time.perf_counter() - start) / calls
    print(f"MetricsBuffer.log: {per_call * 1e6:.1f} us per call (3 metrics, flush every 256 rows)")
    assert session_count(url, run_id) == 3 * calls


# --- evaluations -------------------------------------------------------------------------------


def test_record_and_best_evaluations(url):
    with session_scope(url) as session:
        evals.record_evaluation(
            session,
            weights_name="espcn-x3.g100",
            arch="espcn",
            scale=3,
            dataset="Set5",
            psnr=32.5,
            ssim=0.90,
            protocol={**PROTOCOL, "crop_border": 3},
            per_image=[{"image": "baby", "psnr": 33.0}],
        )
        evals.record_evaluation(
            session,
            weights_name="espcn-x3.g100",
            arch="espcn",
            scale=3,
            dataset="Set5",
            psnr=32.9,
            ssim=0.91,
            protocol={**PROTOCOL, "crop_border": 3},
        )
        evals.record_evaluation(
            session,
            weights_name="espcn-x3.g100",
            arch="espcn",
            scale=3,
            dataset="Set5",
            psnr=34.0,
            ssim=0.93,
            protocol={**PROTOCOL, "channel": "rgb", "crop_border": 3},
        )
        with pytest.raises(ValueError, match="protocol is missing"):
            evals.record_evaluation(
                session,
                weights_name="x",
                arch="x",
                scale=2,
                dataset="Set5",
                psnr=1,
                ssim=None,
                protocol={"channel": "y"},
            )
        with pytest.raises(ValueError, match="source"):
            evals.record_evaluation(
                session,
                weights_name="x",
                arch="x",
                scale=2,
                dataset="Set5",
                psnr=1,
                ssim=None,
                protocol=PROTOCOL,
                source="paper",
            )
    with session_scope(url) as session:
        best = evals.best_evaluations(session)
        assert len(best) == 1 and best[0].psnr == 34.0
        best_y = evals.best_evaluations(session, channel="y")
        assert [e.psnr for e in best_y] == [32.9]
        assert best_y[0].protocol == {**PROTOCOL, "crop_border": 3, "dataset": "Set5"}
        assert evals.best_evaluations(session, scale=2) == []


def test_record_evaluation_from_eval_result(url):
    from srweb.evaluation.evaluate import EvalResult

    result = EvalResult(
        dataset="Set5",
        scale=2,
        protocol={**PROTOCOL, "dataset": "Set5"},
        images=[{"image": "baby.png", "psnr": float("inf"), "ssim": 1.0}],
        psnr=36.5,
        ssim=0.95,
    )
    with session_scope(url) as session:
        stored = evals.record_evaluation(session, result, weights_name="srcnn-x2.g100")
        assert (stored.arch, stored.scale, stored.dataset, stored.psnr) == ("srcnn", 2, "Set5", 36.5)
        assert stored.per_image == [{"image": "baby.png", "psnr": None, "ssim": 1.0}]
        assert evals.record_evaluation(session, result, weights_name="bicubic", psnr=33.66).arch == "bicubic"
        with pytest.raises(TypeError, match="weights_name"):
            evals.record_evaluation(session, result)
        with pytest.raises(TypeError, match="scale, dataset"):
            evals.record_evaluation(session, weights_name="x", psnr=1.0, protocol=PROTOCOL)
        with pytest.raises(ValueError, match="NaN"):
            evals.record_evaluation(session, result, weights_name="x", psnr=float("nan"))


def test_seed_from_cards_is_idempotent(url):
    cards = [
        {
            "name": "espcn-x3.g100",
            "arch": "espcn",
            "scale": 3,
            "num_params": 23_472,
            "metrics": [{"dataset": "Set5", "psnr": 32.6, "ssim": 0.905, "channel": "y", "crop_border": 3}],
        },
        {
            "name": "srcnn-x2.g100",
            "arch": "srcnn",
            "scale": 2,
            "num_params": 8_032,
            "metrics": {"Set5": {"psnr": 36.1, "ssim": 0.95, "protocol": {"degradation": "matlab-bicubic"}}},
        },
        {"name": "fsrcnn-x2.none", "arch": "fsrcnn", "scale": 2, "num_params": 12_000, "metrics": []},
    ]
    with session_scope(url) as session:
        assert evals.seed_from_cards(session, cards) == 2
        assert evals.seed_from_cards(session, cards) == 0
    cards[0]["metrics"][0]["psnr"] = 32.8
    with session_scope(url) as session:
        assert evals.seed_from_cards(session, cards) == 1
    with session_scope(url) as session:
        rows = {e.weights_name: e for e in evals.best_evaluations(session)}
        assert len(rows) == 2 and rows["espcn-x3.g100"].psnr == 32.8
        assert rows["espcn-x3.g100"].source == "card" and rows["espcn-x3.g100"].num_params == 23_472
        assert rows["srcnn-x2.g100"].protocol == {
            "channel": "y",
            "crop_border": 2,
            "degradation": "matlab-bicubic",
            "dataset": "Set5",
        }


def test_the_card_row_of_removed_weights_goes_and_measurements_stay(url):
    card = {
        "name": "espcn-x3.gone",
        "arch": "espcn",
        "scale": 3,
        "num_params": 23_472,
        "metrics": [{"dataset": "Set5", "psnr": 32.6, "ssim": 0.905}],
    }
    kept = {**card, "name": "espcn-x3.kept"}
    with session_scope(url) as session:
        evals.seed_from_cards(session, [card, kept])
        evals.record_evaluation(
            session, weights_name="espcn-x3.gone", scale=3, dataset="Set14", psnr=29.1, protocol=PROTOCOL
        )
    with session_scope(url) as session:
        assert evals.forget_missing_cards(session, ["espcn-x3.kept"]) == 1
        assert evals.forget_missing_cards(session, ["espcn-x3.kept"]) == 0
    with session_scope(url) as session:
        rows = {(e.weights_name, e.dataset) for e in evals.best_evaluations(session)}
    assert rows == {("espcn-x3.kept", "Set5"), ("espcn-x3.gone", "Set14")}


def test_a_new_checkpoint_under_an_old_name_is_judged_on_its_own_results_and_votes(url):
    old, new = "a" * 64, "b" * 64
    card = {
        "name": "espcn-x2.v",
        "arch": "espcn",
        "scale": 2,
        "num_params": 1,
        "sha256": old,
        "metrics": [{"dataset": "Set5", "psnr": 36.0, "ssim": 0.95}],
    }
    with session_scope(url) as session:
        evals.seed_from_cards(session, [card])
        evals.record_evaluation(
            session,
            weights_name="espcn-x2.v",
            scale=2,
            dataset="Set14",
            psnr=32.5,
            protocol=PROTOCOL,
            weights_sha256=old,
        )
        evals.record_evaluation(
            session, weights_name="espcn-x2.v", scale=2, dataset="Urban100", psnr=29.0, protocol=PROTOCOL
        )  # checkpoint not recorded: kept
        rater = get_or_create_rater(session, "rater-token-v").id
        for i, (sha, score) in enumerate([(old, 5), (old, 5), (new, 2), (None, 3)]):
            trial = create_trial(session, image_id=f"img{i}", scale=2, weights_name="espcn-x2.v", weights_sha256=sha)
            submit_vote(
                session,
                trial_id=trial.id,
                rater_id=rater,
                score_sr=score,
                score_ref=3,
                preferred="sr" if score > 3 else "tie" if score == 3 else "bicubic",
                rate_limit=None,
            )
    with session_scope(url) as session:
        evals.seed_from_cards(session, [{**card, "sha256": new, "metrics": [{"dataset": "Set5", "psnr": 35.5}]}])
    with session_scope(url, write=False) as session:
        everything = leaderboard(session, n_boot=20).set_index("weights").loc["espcn-x2.v"]
        current = leaderboard(session, n_boot=20, versions={"espcn-x2.v": new}).set_index("weights").loc["espcn-x2.v"]
    assert everything["n_ratings"] == 4 and everything["psnr_Set14"] == 32.5
    assert current["psnr_Set5"] == 35.5 and "psnr_Set14" not in current.index and current["psnr_Urban100"] == 29.0
    assert current["n_ratings"] == 2 and current["mos"] == pytest.approx(2.5)  # the new checkpoint's vote + the unknown


def test_seed_from_cards_accepts_weights_card_objects(url):
    class Card:
        def to_dict(self):
            return {
                "name": "vdsr-x2.t",
                "arch": "vdsr",
                "scale": 2,
                "num_params": 665_000,
                "metrics": [{"dataset": "Set5", "psnr": 37.0, "ssim": 0.95}],
            }

    with session_scope(url) as session:
        assert evals.seed_from_cards(session, [Card()]) == 1


def test_record_speed(url):
    with session_scope(url) as session:
        result = evals.record_speed(
            session, weights_name="espcn-x3.g100", device="cpu", ms_per_mpix=12.5, fast_path=True
        )
        assert result.host and result.fast_path is True and result.created_at.tzinfo is not None


def test_a_cards_speed_fills_a_fresh_database_and_never_replaces_one_measured_here(url):
    speed = {"ms_per_mpix": 27.5, "fast_path": True, "device": "cpu", "host": "Reference CPU"}
    cards = [
        {"name": "espcn-x4.s", "arch": "espcn", "scale": 4, "metrics": [], "inference": {"speed": speed}},
        {"name": "srcnn-x3.s", "arch": "srcnn", "scale": 3, "metrics": [], "inference": {"speed": speed}},
        {"name": "fsrcnn-x2.s", "arch": "fsrcnn", "scale": 2, "metrics": [], "inference": {}},
        *(
            {"name": f"bad-x2.{i}", "arch": "espcn", "scale": 2, "metrics": [], "inference": {"speed": bad}}
            for i, bad in enumerate(
                [{"device": "cpu"}, {"ms_per_mpix": 3.0}, "fast", {"device": "cpu", "ms_per_mpix": "x"}]
            )
        ),
    ]
    with session_scope(url) as session:
        evals.record_speed(session, weights_name="srcnn-x3.s", device="cpu", ms_per_mpix=600.0, host="here")
        assert evals.seed_speeds_from_cards(session, cards) == 1
        assert evals.seed_speeds_from_cards(session, cards) == 0  # idempotent: every app start seeds
    with session_scope(url, write=False) as session:
        rows = leaderboard(session, n_boot=0).set_index("weights")
    assert rows.loc["espcn-x4.s", "ms_per_mpix"] == 27.5 and rows.loc["espcn-x4.s", "speed_device"] == "cpu"
    assert rows.loc["srcnn-x3.s", "ms_per_mpix"] == 600.0
    assert "fsrcnn-x2.s" not in rows.index  # nothing known about it
    assert not any(name.startswith("bad-x2.") for name in rows.index)  # malformed speeds are skipped


# --- leaderboard -------------------------------------------------------------------------------


def test_leaderboard_joins_fidelity_speed_and_ratings(url):
    with session_scope(url) as session:
        evals.seed_from_cards(
            session,
            [
                {
                    "name": "espcn-x2.g100",
                    "arch": "espcn",
                    "scale": 2,
                    "num_params": 20_000,
                    "metrics": [{"dataset": "Set5", "psnr": 36.0, "ssim": 0.95}],
                },
                {
                    "name": "vdsr-x2.g100",
                    "arch": "vdsr",
                    "scale": 2,
                    "num_params": 665_000,
                    "metrics": [{"dataset": "Set5", "psnr": 37.0, "ssim": 0.96}],
                },
                {
                    "name": "espcn-x3.g100",
                    "arch": "espcn",
                    "scale": 3,
                    "num_params": 21_000,
                    "metrics": [{"dataset": "Set5", "psnr": 32.6, "ssim": 0.90}],
                },
            ],
        )
        evals.record_evaluation(
            session,
            weights_name="bicubic",
            arch="bicubic",
            scale=2,
            dataset="Set5",
            psnr=33.66,
            ssim=0.93,
            protocol=PROTOCOL,
        )
        evals.record_evaluation(
            session,
            weights_name="vdsr-x2.g100",
            arch="vdsr",
            scale=2,
            dataset="Set14",
            psnr=33.0,
            ssim=0.91,
            protocol=PROTOCOL,
        )
        evals.record_speed(session, weights_name="espcn-x2.g100", device="cpu", ms_per_mpix=50.0)
        evals.record_speed(session, weights_name="espcn-x2.g100", device="cpu", ms_per_mpix=40.0, fast_path=True)
        evals.record_speed(session, weights_name="srcnn-x2.speedonly", device="cpu", ms_per_mpix=90.0)
        rater = get_or_create_rater(session, "rater-token-1").id
        for i, (score, preferred) in enumerate([(4, "sr"), (5, "sr"), (3, "tie")]):
            trial = create_trial(session, image_id=f"img{i}", scale=2, weights_name="vdsr-x2.g100")
            submit_vote(
                session,
                trial_id=trial.id,
                rater_id=rater,
                score_sr=score,
                score_ref=3,
                preferred=preferred,
                rate_limit=None,
            )
    with session_scope(url, write=False) as session:
        board = leaderboard(session, n_boot=50)
        x2 = leaderboard(session, scale=2, dataset="Set5", n_boot=50)
    assert list(board.columns[:5]) == ["weights", "kind", "arch", "scale", "params"]
    assert {
        "psnr_Set5",
        "ssim_Set5",
        "protocol_Set5",
        "psnr_Set14",
        "ms_per_mpix",
        "mos",
        "mos_lo",
        "win_rate",
        "win_lo",
        "bt",
        "bt_hi",
        "n_ratings",
        "n_raters",
    } <= set(board.columns)
    assert board["scale"].tolist() == [2, 2, 2, 2, 3]
    assert board["weights"].tolist()[:3] == ["vdsr-x2.g100", "espcn-x2.g100", "bicubic"]
    vdsr = board.set_index("weights").loc["vdsr-x2.g100"]
    assert vdsr["params"] == 665_000 and vdsr["psnr_Set14"] == 33.0
    assert vdsr["mos"] == pytest.approx(4.0) and vdsr["n_ratings"] == 3 and vdsr["n_raters"] == 1
    assert vdsr["win_rate"] == pytest.approx(2.5 / 3) and vdsr["bt"] > 0
    assert vdsr["protocol_Set5"] == "Y, crop 2, matlab-bicubic"
    espcn = board.set_index("weights").loc["espcn-x2.g100"]
    assert espcn["ms_per_mpix"] == 40.0 and espcn["fast_path"] and espcn["n_ratings"] == 0
    bicubic = board.set_index("weights").loc["bicubic"]
    assert bicubic["kind"] == "reference" and bicubic["mos"] == pytest.approx(3.0) and bicubic["bt"] == 0
    speed_only = board.set_index("weights").loc["srcnn-x2.speedonly"]
    assert speed_only["arch"] == "srcnn" and speed_only["scale"] == 2 and pd.isna(speed_only["params"])
    assert set(x2["scale"]) == {2} and "psnr_Set14" not in x2.columns


def test_leaderboard_params_fallback_and_empty(url):
    with session_scope(url) as session:
        assert leaderboard(session).empty
        evals.record_speed(session, weights_name="srcnn-x2.a", device="cpu", ms_per_mpix=1.0)
        board = leaderboard(session, params=lambda name: 8_032 if name == "srcnn-x2.a" else None)
        assert board["params"].tolist() == [8_032]
        assert leaderboard(session, device="cuda").empty


def test_deleting_the_newest_run_never_gives_its_id_to_the_next(url):
    with session_scope(url) as session:
        first = _new_run(session).id
        newest = _new_run(session).id
    with session_scope(url) as session:
        session.delete(runs.get_run(session, newest))
    with session_scope(url) as session:
        assert _new_run(session).id > newest > first


def test_connection_errors_are_told_from_other_database_errors():
    from sqlalchemy.exc import IntegrityError

    from srweb.track.db import is_connection_error

    class Refused(Exception):
        sqlstate = "08006"

    class Syntax(Exception):
        sqlstate = "42601"

    assert is_connection_error(OperationalError("SELECT", {}, Refused("server closed the connection")))
    assert not is_connection_error(OperationalError("SELECT", {}, Syntax("syntax error")))
    assert not is_connection_error(OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: x")))
    assert not is_connection_error(OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked")))
    assert is_connection_error(OperationalError("SELECT", {}, sqlite3.OperationalError("unable to open database file")))
    assert not is_connection_error(IntegrityError("INSERT", {}, Exception("duplicate")))
