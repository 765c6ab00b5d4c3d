"""Run ids are never reused; votes are append-only on PostgreSQL too.

SQLite hands a deleted newest row's id to the next insert unless the table is AUTOINCREMENT,
and weights cards keep their ``run_id``: after deleting the newest run, a new run took its id and
the card pointed at the wrong run. ``runs`` is rebuilt as AUTOINCREMENT (SQLite's documented
table-rebuild procedure; ``srweb.track.db.init_db`` switches foreign keys off around it so the
metrics and checkpoints of the copied runs stay). PostgreSQL's sequences never go back, but rows
inserted with explicit ids (an import, a restore) leave them behind: the sequence is moved past
the largest id.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PG_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION votes_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'votes are append-only' USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        with op.batch_alter_table("runs", recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass
        # Start the counter at the largest id there is (a fresh sqlite_sequence row would be 0).
        op.execute(
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'runs', coalesce(max(id), 0) FROM runs "
            "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'runs')"
        )
    elif dialect == "postgresql":
        op.execute("SELECT setval(pg_get_serial_sequence('runs', 'id'), coalesce(max(id), 0) + 1, false) FROM runs")
        op.execute(_PG_APPEND_ONLY)
        op.execute(
            "CREATE TRIGGER votes_append_only BEFORE UPDATE OR DELETE ON votes "
            "FOR EACH ROW EXECUTE FUNCTION votes_append_only()"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        with op.batch_alter_table("runs", recreate="always", table_kwargs={"sqlite_autoincrement": False}):
            pass
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS votes_append_only ON votes")
        op.execute("DROP FUNCTION IF EXISTS votes_append_only()")
