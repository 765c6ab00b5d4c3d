"""Crowd ratings (raters, trials, append-only votes), speed results, parameter counts on evaluations.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("evaluations") as batch_op:
        batch_op.add_column(sa.Column("num_params", sa.Integer(), nullable=True))

    op.create_table(
        "raters",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("flag_reason", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_raters"),
    )
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("weights_name", sa.String(length=200), nullable=True),
        sa.Column("image_id", sa.String(length=255), nullable=False),
        sa.Column("scale", sa.Integer(), nullable=False),
        sa.Column("left_is_sr", sa.Boolean(), nullable=False),
        sa.Column("rater_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("kind != 'model' OR weights_name IS NOT NULL", name="ck_trials_model_has_weights"),
        sa.CheckConstraint("kind IN ('model', 'hr', 'nearest')", name="ck_trials_kind"),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"], name="fk_trials_rater_id_raters"),
        sa.PrimaryKeyConstraint("id", name="pk_trials"),
    )
    op.create_index("ix_trials_rater_id", "trials", ["rater_id"])
    op.create_index("ix_trials_weights_name", "trials", ["weights_name"])

    op.create_table(
        "votes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("rater_id", sa.String(length=64), nullable=False),
        sa.Column("score_sr", sa.Integer(), nullable=False),
        sa.Column("score_ref", sa.Integer(), nullable=False),
        sa.Column("preferred", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("preferred IN ('sr', 'bicubic', 'tie')", name="ck_votes_preferred"),
        sa.CheckConstraint("score_ref BETWEEN 1 AND 5", name="ck_votes_score_ref"),
        sa.CheckConstraint("score_sr BETWEEN 1 AND 5", name="ck_votes_score_sr"),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"], name="fk_votes_rater_id_raters"),
        sa.ForeignKeyConstraint(["trial_id"], ["trials.id"], name="fk_votes_trial_id_trials"),
        sa.PrimaryKeyConstraint("id", name="pk_votes"),
        sa.UniqueConstraint("trial_id", "rater_id", name="uq_votes_trial_rater"),
    )
    op.create_index("ix_votes_rater_created", "votes", ["rater_id", "created_at"])
    if op.get_bind().dialect.name == "sqlite":
        # Votes are evidence: the database refuses edits, whatever code runs against it.
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER votes_append_only_{action.lower()} BEFORE {action} ON votes "
                "BEGIN SELECT RAISE(ABORT, 'votes are append-only'); END"
            )

    op.create_table(
        "speed_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("weights_name", sa.String(length=200), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("ms_per_mpix", sa.Float(), nullable=False),
        sa.Column("fast_path", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_speed_results"),
    )
    op.create_index("ix_speed_results_weights_name", "speed_results", ["weights_name"])


def downgrade() -> None:
    op.drop_table("speed_results")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS votes_append_only_update")
        op.execute("DROP TRIGGER IF EXISTS votes_append_only_delete")
    op.drop_table("votes")
    op.drop_table("trials")
    op.drop_table("raters")
    with op.batch_alter_table("evaluations") as batch_op:
        batch_op.drop_column("num_params")
