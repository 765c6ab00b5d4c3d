"""Engine, sessions, schema migrations and write retries for the tracker database.

One engine and two sessionmakers (read / write) per database URL and process, made from
``srweb.config.get_settings().database_url`` unless a URL is given. There is no global Session:
use :func:`session_scope` (or :func:`write_transaction` for retried writes) and pass the Session
to the repository functions in ``runs``, ``evals``, ``ratings`` and ``leaderboard``.

SQLite is set up for several writer processes (training worker + web app): WAL journal,
``busy_timeout``, ``synchronous=NORMAL``, foreign keys on. Write sessions open with
``BEGIN IMMEDIATE``: a ``BEGIN DEFERRED`` transaction that reads and then writes can deadlock with
another writer, and SQLite answers that with an immediate "database is locked" that no busy
timeout waits out. The pysqlite recipe from SQLAlchemy's SQLite docs ("Enabling Non-Legacy SQLite
Transactional Modes") is used: the driver's own BEGIN is disabled (``isolation_level = None``) and
SQLAlchemy emits BEGIN in a ``begin`` event. Read sessions keep ``BEGIN DEFERRED`` so they never
wait for a writer under WAL.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from srweb.config import get_settings

T = TypeVar("T")

BUSY_TIMEOUT_S = 30.0
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_BEGIN_MODES = ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")
MIGRATION_LOCK_KEY = 0x5277_6562  # "Rweb": the PostgreSQL advisory lock that serialises init_db

_lock = threading.Lock()
_engines: dict[tuple[str, int], Engine] = {}
_sessionmakers: dict[tuple[str, int, bool], sessionmaker[Session]] = {}
_initialized: set[tuple[str, int]] = set()


def _resolve_url(url: str | None) -> str:
    return url or get_settings().database_url


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from the driver; _sqlite_on_begin emits it (SQLAlchemy's documented recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() not in {"wal", "memory"}:
            # Switching to WAL needs a moment of exclusive access; another process may hold it.
            with_retry(lambda: cursor.execute("PRAGMA journal_mode = WAL"), exceptions=(Exception,))
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    if mode not in _BEGIN_MODES:
        raise ValueError(f"sqlite_begin must be one of {_BEGIN_MODES}, got {mode!r}")
    conn.exec_driver_sql(f"BEGIN {mode}")


def _create_engine(url: str) -> Engine:
    sa_url = make_url(url)
    if sa_url.get_backend_name() != "sqlite":
        return create_engine(sa_url, pool_pre_ping=True)
    database = sa_url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(sa_url, connect_args={"timeout": BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def get_engine(url: str | None = None) -> Engine:
    """The engine for ``url`` (default: settings), created once per process and URL."""
    key = (_resolve_url(url), os.getpid())  # a forked child must not reuse the parent's pool
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _create_engine(key[0])
        return engine


def get_sessionmaker(url: str | None = None, *, write: bool = True) -> sessionmaker[Session]:
    """Sessionmaker bound to :func:`get_engine`; ``write`` sessions begin IMMEDIATE on SQLite.

    Sessions keep loaded attributes after commit (``expire_on_commit=False``) so returned rows
    stay readable once the transaction is over.
    """
    resolved = _resolve_url(url)
    key = (resolved, os.getpid(), write)
    with _lock:
        maker = _sessionmakers.get(key)
    if maker is None:
        engine = get_engine(resolved)
        bind = engine.execution_options(sqlite_begin="IMMEDIATE") if write else engine
        maker = sessionmaker(bind=bind, expire_on_commit=False)
        with _lock:
            maker = _sessionmakers.setdefault(key, maker)
    return maker


@contextmanager
def session_scope(url: str | None = None, *, write: bool = True) -> Iterator[Session]:
    """A Session in one transaction: committed on success, rolled back on error, then closed."""
    session = get_sessionmaker(url, write=write)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# PostgreSQL's answers that a retry of the whole transaction cures: serialization failure, deadlock.
_PG_RETRY_SQLSTATES = {"40001", "40P01"}


def is_lock_error(exc: BaseException) -> bool:
    """True for SQLite's transient "database is locked" / "database table is locked" / busy errors
    and PostgreSQL's serialization failures and deadlocks."""
    orig = getattr(exc, "orig", exc)
    if getattr(orig, "sqlstate", None) in _PG_RETRY_SQLSTATES:
        return True
    text = str(orig).lower()
    return isinstance(exc, (OperationalError, sqlite3.OperationalError)) and ("locked" in text or "busy" in text)


def is_connection_error(exc: BaseException) -> bool:
    """True when the database could not be reached or the connection dropped (a server restart, a
    network outage): the work is fine, the database is not there right now."""
    from sqlalchemy.exc import DBAPIError, InterfaceError

    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, (OperationalError, InterfaceError)) or is_lock_error(exc):
        return False
    orig = getattr(exc, "orig", None)
    if isinstance(orig, sqlite3.Error):  # a file, not a server: only a folder that cannot be opened
        return "unable to open" in str(orig)
    # PostgreSQL: connection exceptions (class 08), the server shutting down (57P0x); no code: no server
    return getattr(orig, "sqlstate", None) in (
        None,
        "08000",
        "08001",
        "08003",
        "08004",
        "08006",
        "57P01",
        "57P02",
        "57P03",
    )


def until_reachable(fn: Callable[[], T], *, say: Callable[[str], None] = print, max_delay: float = 30.0) -> T:
    """``fn()`` (a whole transaction), retried while the database cannot be reached: one line per
    try, waits doubling from 1 s up to ``max_delay``. Other errors propagate at once."""
    delay = 1.0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            first = str(getattr(exc, "orig", exc)).strip().splitlines()
            say(f"cannot reach the database ({first[0] if first else type(exc).__name__}); retrying in {delay:.0f} s")
            time.sleep(delay)
            delay = min(max_delay, delay * 2)


def with_retry(
    fn: Callable[[], T],
    *,
    attempts: int = 8,
    base_delay: float = 0.05,
    max_delay: float = 2.0,
    exceptions: tuple[type[BaseException], ...] = (OperationalError,),
) -> T:
    """Call ``fn`` and retry it on lock/busy errors with exponential backoff and full jitter.

    ``fn`` must be a whole transaction (it is re-run from the start). Other errors propagate
    at once; the last lock error propagates after ``attempts`` tries.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except exceptions as exc:
            if attempt == attempts - 1 or not is_lock_error(exc):
                raise
            time.sleep(random.uniform(0, min(max_delay, base_delay * 2**attempt)))
    raise AssertionError("unreachable")


def write_transaction(fn: Callable[[Session], T], url: str | None = None, **retry: Any) -> T:
    """Run ``fn(session)`` in a write :func:`session_scope`, retried as a whole on lock errors."""

    def once() -> T:
        with session_scope(url, write=True) as session:
            return fn(session)

    return with_retry(once, **retry)


def alembic_config(url: str | None = None) -> Any:
    """Alembic ``Config`` built in code for the packaged migrations (works from an installed wheel)."""
    from alembic.config import Config  # Alembic is heavy; only migrations need it

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = _resolve_url(url)
    return config


@contextmanager
def foreign_keys_off(connection: Any) -> Iterator[None]:
    """SQLite: foreign keys off while migrations rebuild tables (a rebuilt table is dropped, and
    dropping a table with foreign keys on deletes the rows that refer to it: SQLite's documented
    12-step ALTER procedure). The PRAGMA only acts outside a transaction, so it goes straight to
    the driver connection, before BEGIN. Other databases: nothing to do."""
    if connection.dialect.name != "sqlite":
        yield
        return
    driver = connection.connection.driver_connection
    driver.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        driver.execute("PRAGMA foreign_keys = ON")


def check_foreign_keys(connection: Any) -> None:
    """SQLite: refuse to commit a migration that left a row pointing at nothing."""
    if connection.dialect.name == "sqlite":
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"migration left {len(broken)} rows with broken foreign keys, e.g. {broken[0]}")


def init_db(url: str | None = None) -> None:
    """Create or upgrade the schema to the newest Alembic revision (``upgrade head``).

    Idempotent and cheap after the first call in a process. Safe when several processes start
    at once: on SQLite the upgrade runs in one ``BEGIN IMMEDIATE`` transaction, so a second
    process waits for the first and then finds the database already at head.
    """
    from alembic import command  # Alembic is heavy; only migrations need it

    resolved = _resolve_url(url)
    key = (resolved, os.getpid())
    if key in _initialized:
        return
    config = alembic_config(resolved)

    def upgrade() -> None:
        with get_engine(resolved).execution_options(sqlite_begin="IMMEDIATE").connect() as connection:
            # One outer transaction: reading the current revision and every migration step
            # happen under the same write lock (Alembic would otherwise commit per revision).
            with foreign_keys_off(connection), connection.begin():
                if connection.dialect.name == "postgresql":  # BEGIN IMMEDIATE's part: one migrator at a time
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                check_foreign_keys(connection)

    with_retry(upgrade)
    _initialized.add(key)


def dispose_engine(url: str | None = None) -> None:
    """Close this process's pooled connections to ``url`` and forget its engine (tests, shutdown)."""
    resolved = _resolve_url(url)
    pid = os.getpid()
    with _lock:
        engine = _engines.pop((resolved, pid), None)
        for write in (True, False):
            _sessionmakers.pop((resolved, pid, write), None)
        _initialized.discard((resolved, pid))
    if engine is not None:
        engine.dispose()
