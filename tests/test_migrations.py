"""Alembic migrations: a real upgrade path with data, ORM/head agreement, concurrent init."""

from __future__ import annotations

import multiprocessing

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, Table, inspect, text

from srweb.track import runs
from srweb.track.db import MIGRATIONS_DIR, alembic_config, get_engine, init_db, session_scope
from srweb.track.schema import Base


@pytest.fixture
def url(db_url):
    """An empty database: SQLite, then PostgreSQL (``db_url`` in conftest)."""
    return db_url


def _upgrade(url: str, revision: str) -> None:
    config = alembic_config(url)
    with get_engine(url).connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()


def _version(url: str) -> str:
    with get_engine(url).connect() as connection:
        return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def test_revisions_form_one_line():
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    assert script.get_heads() == ["0007"]
    assert [r.revision for r in script.walk_revisions()] == ["0007", "0006", "0005", "0004", "0003", "0002", "0001"]


def test_upgrade_from_0001_keeps_data(url):
    _upgrade(url, "0001")
    assert _version(url) == "0001"
    tables = set(inspect(get_engine(url)).get_table_names())
    assert {"runs", "metrics", "checkpoints", "evaluations"} <= tables and "votes" not in tables
    with get_engine(url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO runs (id, name, arch, scale, status, config, created_at, step) VALUES "
                "(1, 'espcn-x3_f64_p17_b16_lr1e-3', 'espcn', 3, 'running', '{\"lr\": 0.001}', '2026-01-01 10:00:00', 5)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO metrics (run_id, step, name, value, wall_time) VALUES "
                "(1, 1, 'loss', 0.5, 1.0), (1, 2, 'loss', 0.25, 2.0), (1, 2, 'val_psnr', 30.0, 2.0)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO evaluations (weights_name, arch, scale, dataset, protocol, psnr, ssim, source, created_at) "
                "VALUES ('espcn-x3.t', 'espcn', 3, 'Set5', '{\"channel\": \"y\"}', 32.5, 0.9, 'eval', '2026-01-01')"
            )
        )

    init_db(url)
    assert _version(url) == "0007"
    with session_scope(url) as session:
        run = runs.get_run(session, 1)
        assert run.name == "espcn-x3_f64_p17_b16_lr1e-3" and run.config == {"lr": 0.001} and run.step == 5
        assert run.created_at.isoformat() == "2026-01-01T10:00:00+00:00"
        assert run.train_seconds is None  # recorded before runs kept their training time
        series = runs.metric_series(session, 1, wide=True)
        assert series["loss"].tolist() == [0.5, 0.25] and series.loc[2, "val_psnr"] == 30.0
        num_params, sha = session.execute(text("SELECT num_params, weights_sha256 FROM evaluations")).one()
        assert num_params is None and sha is None  # a result from before versions were recorded
        assert session.execute(text("SELECT count(*) FROM votes")).scalar_one() == 0


def test_orm_metadata_matches_head(url):
    init_db(url)
    with get_engine(url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        drifted = MetaData()
        for table in Base.metadata.tables.values():
            table.to_metadata(drifted)
        Table("extra", drifted, Column("id", Integer, primary_key=True))
        assert compare_metadata(context, drifted)  # the comparison does see drift
    command.check(alembic_config(url))  # the `alembic check` command agrees


def test_downgrade_and_upgrade_again(url):
    init_db(url)
    _upgrade(url, "head")  # nothing to do
    config = alembic_config(url)
    with get_engine(url).connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")
        connection.commit()
    assert "votes" not in inspect(get_engine(url)).get_table_names()
    _upgrade(url, "head")
    assert _version(url) == "0007"


def _init_in_child(url: str, start, results) -> None:
    start.wait(10)
    try:
        init_db(url)
        with session_scope(url) as session:
            runs.create_run(session, name="n", arch="a", scale=2, config={})
        results.put("ok")
    except Exception as exc:  # reported to the parent
        results.put(repr(exc))


def test_two_processes_init_at_once(url):
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    children = [context.Process(target=_init_in_child, args=(url, start, results)) for _ in range(3)]
    for child in children:
        child.start()
    start.set()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(30)
    assert outcomes == ["ok"] * 3
    assert _version(url) == "0007"
    with get_engine(url).connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM runs").scalar() == 3


def _insert_run(connection, run_id: int) -> None:
    connection.execute(
        text(
            "INSERT INTO runs (id, name, arch, scale, status, config, created_at, step) VALUES "
            f"({run_id}, 'espcn-x2', 'espcn', 2, 'finished', '{{}}', '2026-01-01 10:00:00', 5)"
        )
    )
    connection.execute(
        text(f"INSERT INTO metrics (run_id, step, name, value, wall_time) VALUES ({run_id}, 1, 'loss', 0.5, 1.0)")
    )
    connection.execute(
        text(
            f"INSERT INTO checkpoints (run_id, step, path, kind, created_at) VALUES "
            f"({run_id}, 5, 'last.pt', 'last', '2026-01-01 10:00:00')"
        )
    )


def test_run_ids_are_never_reused_after_the_upgrade(url):
    """0005: runs inserted before it keep their metrics and checkpoints through the table rebuild
    (SQLite), and deleting the newest run never hands its id to the next one (both databases),
    rows inserted with explicit ids included (PostgreSQL's sequence is moved past them)."""
    _upgrade(url, "0004")
    with get_engine(url).begin() as connection:
        for run_id in (1, 2, 3):
            _insert_run(connection, run_id)
    init_db(url)
    with session_scope(url) as session:
        assert session.execute(text("SELECT count(*) FROM metrics")).scalar_one() == 3
        assert session.execute(text("SELECT count(*) FROM checkpoints")).scalar_one() == 3
        session.execute(text("DELETE FROM runs WHERE id = 3"))
        assert session.execute(text("SELECT count(*) FROM metrics")).scalar_one() == 2  # the cascade still works
    with session_scope(url) as session:
        assert runs.create_run(session, name="n", arch="a", scale=2, config={}).id == 4
    with session_scope(url) as session:
        session.execute(text("DELETE FROM runs WHERE id = 4"))
    with session_scope(url) as session:
        assert runs.create_run(session, name="n", arch="a", scale=2, config={}).id == 5
