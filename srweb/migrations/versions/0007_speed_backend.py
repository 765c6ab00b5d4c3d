"""The backend (and precision) a speed result was measured with, e.g. ``openvino/bf16`` (issue 33).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("speed_results") as batch_op:
        batch_op.add_column(sa.Column("backend", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("speed_results") as batch_op:
        batch_op.drop_column("backend")
