"""Several OS processes write one database (SQLite file, PostgreSQL server) at once: raters voting while a run logs metrics."""

from __future__ import annotations

import multiprocessing
import time

import pytest
from sqlalchemy import text

from srweb.track import runs
from srweb.track.db import dispose_engine, get_engine, init_db, session_scope, with_retry
from srweb.track.ratings import VoteRejected, create_trial, get_or_create_rater, rating_stats, submit_vote

N_RATERS = 8
VOTES_EACH = 250
METRIC_STEPS = 1500


def _rater(url: str, rater_id: str, trial_ids: list[int], start, results) -> None:
    start.wait(30)
    errors, retries, duplicates = [], 0, 0
    for i, trial_id in enumerate(trial_ids):
        attempts = 0

        def vote(trial_id=trial_id, i=i) -> None:
            nonlocal attempts
            attempts += 1
            with session_scope(url) as session:
                submit_vote(
                    session,
                    trial_id=trial_id,
                    rater_id=rater_id,
                    score_sr=1 + i % 5,
                    score_ref=3,
                    preferred=("sr", "bicubic", "tie")[i % 3],
                    rate_limit=None,
                )

        try:
            with_retry(vote)
            retries += attempts - 1
            if i % 50 == 0:  # a double submit (e.g. a double click) must be refused, not stored twice
                try:
                    with_retry(vote)
                except VoteRejected as exc:
                    duplicates += exc.reason == "duplicate"
        except Exception as exc:  # reported to the parent
            errors.append(repr(exc))
    results.put((rater_id, errors, retries, duplicates))


def _trainer(url: str, run_id: int, start, results) -> None:
    start.wait(30)
    errors = []
    try:
        with runs.MetricsBuffer(run_id, url=url, max_rows=20, max_interval=0.05) as buffer:
            for step in range(METRIC_STEPS):
                buffer.log(step, {"loss": 1.0 / (step + 1), "lr": 1e-4})
                if step % 100 == 0:
                    time.sleep(0.01)
    except Exception as exc:
        errors.append(repr(exc))
    results.put(("trainer", errors, 0, 0))


def _reader(url: str, start, results) -> None:
    start.wait(30)
    errors = []
    try:
        for _ in range(5):
            with session_scope(url, write=False) as session:
                rating_stats(session, n_boot=20)
            time.sleep(0.2)
    except Exception as exc:
        errors.append(repr(exc))
    results.put(("reader", errors, 0, 0))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_concurrent_votes_and_metrics(db_url):
    url = db_url
    init_db(url)
    trials: dict[str, list[int]] = {}
    with session_scope(url) as session:
        run_id = runs.set_status(
            session, runs.create_run(session, name="n", arch="a", scale=2, config={}).id, "running"
        ).id
        for r in range(N_RATERS):
            rater = get_or_create_rater(session, f"concurrent-rater-{r}").id
            trials[rater] = [
                create_trial(session, image_id=f"img{i}", scale=2, weights_name=f"m{i % 4}-x2.t", rater_id=rater).id
                for i in range(VOTES_EACH)
            ]
    dispose_engine(url)  # no pooled connection crosses the fork

    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    workers = [context.Process(target=_rater, args=(url, rater, ids, start, results)) for rater, ids in trials.items()]
    workers.append(context.Process(target=_trainer, args=(url, run_id, start, results)))
    workers.append(context.Process(target=_reader, args=(url, start, results)))
    for worker in workers:
        worker.start()
    began = time.perf_counter()
    start.set()
    reports = [results.get(timeout=100) for _ in workers]
    elapsed = time.perf_counter() - began
    for worker in workers:
        worker.join(10)
    errors = [error for _, errs, _, _ in reports for error in errs]
    retries = sum(report[2] for report in reports)
    print(f"{N_RATERS * VOTES_EACH} votes + {METRIC_STEPS * 2} metric rows in {elapsed:.1f} s, {retries} lock retries")
    assert errors == []
    assert sum(report[3] for report in reports) == N_RATERS * (VOTES_EACH // 50)

    with get_engine(url).connect() as connection:
        sql = lambda statement, **params: connection.execute(text(statement), params)  # noqa: E731
        assert sql("SELECT count(*) FROM votes").scalar() == N_RATERS * VOTES_EACH
        assert sql("SELECT count(*) FROM (SELECT DISTINCT trial_id, rater_id FROM votes) AS pairs").scalar() == (
            N_RATERS * VOTES_EACH
        )
        per_rater = dict(sql("SELECT rater_id, count(*) FROM votes GROUP BY rater_id").all())
        assert per_rater == {rater: VOTES_EACH for rater in trials}
        assert sql("SELECT count(*) FROM metrics WHERE run_id = :id", id=run_id).scalar() == METRIC_STEPS * 2
        assert sql("SELECT step FROM runs WHERE id = :id", id=run_id).scalar() == METRIC_STEPS - 1
    dispose_engine(url)
