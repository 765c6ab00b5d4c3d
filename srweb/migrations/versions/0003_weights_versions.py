"""Which checkpoint a trial showed and an evaluation measured (weights names get new checkpoints).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("trials", "evaluations"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("weights_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    for table in ("trials", "evaluations"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("weights_sha256")
