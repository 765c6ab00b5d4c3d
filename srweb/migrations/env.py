"""Alembic environment: migrates the srweb tracker database (batch mode for SQLite's ALTER limits).

The connection comes from ``config.attributes["connection"]`` when ``srweb.track.db.init_db``
drives the upgrade; from the alembic CLI an engine is made by ``srweb.track.db.get_engine`` so
the same SQLite pragmas and ``BEGIN IMMEDIATE`` apply.
"""

from __future__ import annotations

import logging.config

from alembic import context
from sqlalchemy.engine import Connection

from srweb.config import get_settings
from srweb.track.schema import Base

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("connection") is None:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    return (
        config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url") or get_settings().database_url
    )


def _configure(**kwargs: object) -> None:
    context.configure(target_metadata=target_metadata, render_as_batch=True, compare_type=True, **kwargs)


def run_migrations_offline() -> None:
    _configure(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_online(connection: Connection) -> None:
    # srweb's SQLite engine emits BEGIN itself (see srweb.track.db), so DDL is transactional there
    # too: the whole upgrade is one transaction. A batch migration that must rebuild a table with
    # foreign keys switched off needs ``with op.get_context().autocommit_block()`` around the PRAGMA.
    _configure(connection=connection, transactional_ddl=True if connection.dialect.name == "sqlite" else None)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_online(connection)
        return
    from srweb.track.db import foreign_keys_off, get_engine

    with get_engine(_database_url()).execution_options(sqlite_begin="IMMEDIATE").connect() as connection:
        with foreign_keys_off(connection):
            _run_online(connection)
            connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
