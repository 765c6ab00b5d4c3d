"""Queued runs carried to ``srweb worker`` processes by procrastinate (PostgreSQL only).

With a server database the app and ``srweb jobs submit`` only queue: :func:`defer_run` puts a
``train_run`` job on procrastinate's ``training`` queue (in the same PostgreSQL database as the
tracker), and any ``srweb worker`` claims it (``SELECT ... FOR UPDATE SKIP LOCKED``: never two at
once). procrastinate supplies worker heartbeats, stalled-job lookup and cooperative abort; this
module wraps the few calls srweb needs. With SQLite none of this is used: the app's dispatcher
(:mod:`srweb.train.jobs`) starts one process per run, as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy.engine import make_url

from srweb.config import get_settings

QUEUE = "training"
TASK_NAME = "srweb.train_run"
SCHEMA_LOCK_KEY = 0x5277_6563  # advisory lock: one process applies procrastinate's schema


def uses_queue(url: str | None = None) -> bool:
    """Whether queued runs go to workers through procrastinate: the database is PostgreSQL."""
    return make_url(url or get_settings().database_url).get_backend_name() == "postgresql"


def conninfo(url: str | None = None) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL (driver part dropped)."""
    sa_url = make_url(url or get_settings().database_url).set(drivername="postgresql")
    return sa_url.render_as_string(hide_password=False)


def make_app(url: str | None = None, task_body=None):
    """A procrastinate App on the tracker's PostgreSQL database. A worker passes ``task_body``
    (``body(context, run_id)``) to register the ``train_run`` task it executes; queueing needs no
    body (jobs are deferred by task name), so this module never imports the worker's code."""
    import procrastinate  # only with a PostgreSQL database: SQLite users never load it

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(url)))
    if task_body is not None:
        app.task(name=TASK_NAME, queue=QUEUE, pass_context=True)(task_body)
    return app


@contextlib.contextmanager
def opened(url: str | None = None) -> Iterator[object]:
    """A procrastinate App opened for synchronous calls, closed afterwards."""
    app = make_app(url)
    with app.open():
        yield app


def ensure_schema(url: str | None = None) -> None:
    """Create procrastinate's tables in the tracker database once (a no-op when they exist)."""
    import psycopg

    with psycopg.connect(conninfo(url), autocommit=True) as conn, conn.transaction():
        conn.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
        if conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is None:
            from procrastinate.schema import SchemaManager

            conn.execute(SchemaManager.get_schema())


def defer_run(run_id: int, url: str | None = None) -> int:
    """Queue run ``run_id`` for any worker; returns the procrastinate job id. A run already
    waiting in the queue is not queued twice (its queueing lock)."""
    import procrastinate.exceptions

    ensure_schema(url)
    with opened(url) as app:
        task = app.configure_task(TASK_NAME, queue=QUEUE, lock=f"run-{run_id}", queueing_lock=f"run-{run_id}")
        try:
            return task.defer(run_id=run_id)
        except procrastinate.exceptions.AlreadyEnqueued:
            return job_of_run(app, run_id) or 0


def job_of_run(app, run_id: int, statuses: tuple[str, ...] = ("todo", "doing")) -> int | None:
    """The newest procrastinate job id of run ``run_id`` in one of ``statuses``."""
    for job in sorted(app.job_manager.list_jobs(queue=QUEUE, lock=f"run-{run_id}"), key=lambda j: -j.id):
        if job.status in statuses:
            return job.id
    return None


def abort_run(run_id: int, url: str | None = None) -> bool:
    """Ask the worker training ``run_id`` to stop (procrastinate's cooperative abort; the worker
    polls for it every second) or drop its job if it still waits. True when a job was found."""
    ensure_schema(url)
    with opened(url) as app:
        job_id = job_of_run(app, run_id)
        if job_id is None:
            return False
        return bool(app.job_manager.cancel_job_by_id(job_id, abort=True))
