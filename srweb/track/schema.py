"""ORM schema of the tracker: training runs, evaluations, crowd ratings and speed results.

SQLAlchemy 2.0 typed declarative mapping. Every change here ships as an Alembic revision in
``srweb/migrations/versions`` (``tests/test_migrations.py`` fails when they drift apart).
Timestamps are stored as naive UTC and come back as timezone-aware UTC datetimes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

RUN_STATUSES = ("queued", "running", "finished", "failed", "cancelled")
CHECKPOINT_KINDS = ("last", "best", "export")
EVAL_SOURCES = ("card", "eval")
TRIAL_KINDS = ("model", "hr", "nearest")
PREFERENCES = ("sr", "bicubic", "tie")

# Stable constraint names keep Alembic batch (table-copy) migrations on SQLite deterministic.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def other_checkpoint(recorded: str | None, current: str | None) -> bool:
    """Whether a result or trial recorded on checkpoint ``recorded`` (a sha256) is about another
    checkpoint than its weights name's ``current`` one; False when either is unknown."""
    return bool(recorded and current and recorded != current)


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime`` stored as naive UTC, returned as aware UTC (SQLite keeps no offset)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC (srweb.track.schema.utcnow)")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    """Declarative base; ``Base.metadata`` is the migrations' target."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Run(Base):
    """One training run; ``name`` spells out the config, ``config`` holds all of it."""

    __tablename__ = "runs"
    # AUTOINCREMENT: SQLite must never hand a deleted run's id to a new run (weights cards keep it).
    __table_args__ = (CheckConstraint(_in("status", RUN_STATUSES), name="status"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    arch: Mapped[str] = mapped_column(String(64), index=True)
    scale: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    device: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    pid: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    best_psnr: Mapped[float | None] = mapped_column(Float)
    # Training time over every session, as the trainer counts it (its checkpoints carry it across
    # resumes): a resumed run's duration without the pause. NULL for runs that never trained.
    train_seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    log_path: Mapped[str | None] = mapped_column(String(1024))
    run_dir: Mapped[str | None] = mapped_column(String(1024))
    weights_name: Mapped[str | None] = mapped_column(String(200))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    resumed_from: Mapped[str | None] = mapped_column(String(1024))
    # The `srweb worker` (its --name) training or last trained the run; NULL: this machine's dispatcher.
    worker: Mapped[str | None] = mapped_column(String(200))

    checkpoints: Mapped[list[Checkpoint]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True, order_by="Checkpoint.step"
    )

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, name={self.name!r}, status={self.status!r}, step={self.step!r})"


class Metric(Base):
    """One scalar logged by a run at a step. ``value`` is NULL for NaN; ``wall_time`` is Unix seconds."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run_id_name_step", "run_id", "name", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float)
    wall_time: Mapped[float] = mapped_column(Float)


class Checkpoint(Base):
    """A checkpoint file written by a run."""

    __tablename__ = "checkpoints"
    __table_args__ = (CheckConstraint(_in("kind", CHECKPOINT_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1024))
    kind: Mapped[str] = mapped_column(String(16), default="last")
    psnr: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    run: Mapped[Run] = relationship(back_populates="checkpoints")


class Evaluation(Base):
    """PSNR/SSIM of one weights entry on one dataset, with the protocol that produced it.

    ``protocol`` holds ``channel``, ``crop_border``, ``degradation`` and ``dataset``;
    ``num_params`` is copied from the weights card so the leaderboard needs no model code.
    """

    __tablename__ = "evaluations"
    __table_args__ = (
        Index("ix_evaluations_weights_dataset_scale", "weights_name", "dataset", "scale"),
        CheckConstraint(_in("source", EVAL_SOURCES), name="source"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    weights_name: Mapped[str] = mapped_column(String(200))
    arch: Mapped[str] = mapped_column(String(64))
    scale: Mapped[int] = mapped_column(Integer)
    dataset: Mapped[str] = mapped_column(String(64))
    protocol: Mapped[dict[str, Any]] = mapped_column(JSON)
    psnr: Mapped[float] = mapped_column(Float)
    ssim: Mapped[float | None] = mapped_column(Float)
    per_image: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    num_params: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16), default="eval")
    weights_sha256: Mapped[str | None] = mapped_column(String(64))  # the checkpoint measured (None: unknown)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Rater(Base):
    """An anonymous rater; ``id`` is the opaque session token. Flagged raters' votes are kept but not scored."""

    __tablename__ = "raters"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    flag_reason: Mapped[str | None] = mapped_column(String(255))


class Trial(Base):
    """One blind comparison shown to a rater: a candidate (SR output or anchor) against bicubic.

    ``kind`` is ``model`` (``weights_name`` set), or an anchor: ``hr`` (the ground truth) or
    ``nearest`` (nearest-neighbour upscale). ``left_is_sr`` records the side the candidate was on.
    """

    __tablename__ = "trials"
    __table_args__ = (
        CheckConstraint(_in("kind", TRIAL_KINDS), name="kind"),
        CheckConstraint("kind != 'model' OR weights_name IS NOT NULL", name="model_has_weights"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="model")
    weights_name: Mapped[str | None] = mapped_column(String(200), index=True)
    image_id: Mapped[str] = mapped_column(String(255))
    scale: Mapped[int] = mapped_column(Integer)
    left_is_sr: Mapped[bool] = mapped_column(Boolean)
    weights_sha256: Mapped[str | None] = mapped_column(String(64))  # the checkpoint shown (None: unknown)
    rater_id: Mapped[str | None] = mapped_column(ForeignKey("raters.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Vote(Base):
    """A rater's answer to a trial. Append-only: code never updates or deletes votes."""

    __tablename__ = "votes"
    __table_args__ = (
        UniqueConstraint("trial_id", "rater_id", name="uq_votes_trial_rater"),
        CheckConstraint("score_sr BETWEEN 1 AND 5", name="score_sr"),
        CheckConstraint("score_ref BETWEEN 1 AND 5", name="score_ref"),
        CheckConstraint(_in("preferred", PREFERENCES), name="preferred"),
        Index("ix_votes_rater_created", "rater_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"))
    rater_id: Mapped[str] = mapped_column(ForeignKey("raters.id"))
    score_sr: Mapped[int] = mapped_column(Integer)
    score_ref: Mapped[int] = mapped_column(Integer)
    preferred: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SpeedResult(Base):
    """Inference speed of a weights entry on a device, in milliseconds per output megapixel."""

    __tablename__ = "speed_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    weights_name: Mapped[str] = mapped_column(String(200), index=True)
    device: Mapped[str] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255))
    ms_per_mpix: Mapped[float] = mapped_column(Float)
    fast_path: Mapped[bool] = mapped_column(Boolean, default=False)
    backend: Mapped[str | None] = mapped_column(String(64))  # "openvino/bf16": what ran (srweb.inference.backends)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Worker(Base):
    """A ``srweb worker`` process (one per training machine): what it is and what it trains now.

    ``heartbeat_at`` is stamped every few seconds while it runs; a worker is alive while it is
    recent (:data:`srweb.track.workers.ALIVE_SECONDS`). The row stays after the worker stops.
    """

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    device: Mapped[str | None] = mapped_column(String(64))
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    pid: Mapped[int | None] = mapped_column(Integer)
    run_id: Mapped[int | None] = mapped_column(Integer)  # no foreign key: a deleted run must not block a heartbeat
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
