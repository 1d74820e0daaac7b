"""ORM tables of the store (SQLAlchemy 2 typed mappings), shared by SQLite and PostgreSQL.

The schema is created and changed only by the migrations in ``migrations/versions``; a test
checks that the migrated database matches these classes exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.store.records import FeedbackSource, JobKind, JobState

ID_LENGTH = 64
NAME_LENGTH = 63  # use case / adapter names: [a-z0-9][a-z0-9-]{0,62}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database.

    Naive UTC on both backends because SQLite has no time zones: comparing stored values in SQL
    (heartbeat cut-offs) must mean the same thing on SQLite and PostgreSQL.
    """

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("store datetimes must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


# An autoincrementing 64-bit key; SQLite only autoincrements a column typed exactly INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _enum(cls: type, name: str) -> Enum:
    # Stored as VARCHAR + CHECK (not a native PG enum): adding a value later is a plain migration.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )


class Base(DeclarativeBase):
    # Deterministic constraint names, so later migrations can refer to (and drop) them.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class CompletionRow(Base):
    __tablename__ = "completions"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    adapter: Mapped[str | None] = mapped_column(String(NAME_LENGTH))  # None: the base model
    version: Mapped[int | None]
    prompt: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    sampling_params: Mapped[dict[str, Any]]
    prompt_tokens: Mapped[int]
    completion_tokens: Mapped[int]
    latency_ms: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(index=True)

    __table_args__ = (Index(None, "adapter", "version"),)


class FeedbackRow(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    use_case: Mapped[str] = mapped_column(String(NAME_LENGTH))
    prompt: Mapped[str] = mapped_column(Text)
    candidate_0: Mapped[str] = mapped_column(Text)
    candidate_1: Mapped[str] = mapped_column(Text)
    completion_id_0: Mapped[str | None] = mapped_column(ForeignKey("completions.id"), index=True)
    completion_id_1: Mapped[str | None] = mapped_column(ForeignKey("completions.id"), index=True)
    choice: Mapped[int] = mapped_column(SmallInteger)  # 0, 1, or -1 for a tie
    labeler: Mapped[str | None] = mapped_column(String(256))
    source: Mapped[FeedbackSource] = mapped_column(_enum(FeedbackSource, "feedback_source"))
    # "metadata" is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata")
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # sha256 of the canonical request body: tells a retry (same body) from a key reused for
    # different content (Conflict).
    body_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint("choice IN (-1, 0, 1)", name="choice"),
        # NULL keys are distinct on both backends, so feedback without a key never collides.
        UniqueConstraint("use_case", "idempotency_key"),
        Index(None, "use_case", "id"),  # export and snapshot scans in id order
    )


class SnapshotRow(Base):
    __tablename__ = "feedback_snapshots"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    use_case: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    row_count: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class SnapshotItemRow(Base):
    """The frozen membership of a snapshot: one row per feedback id.

    A set of ids rather than a max id: on PostgreSQL a transaction holding a lower id can commit
    after a higher one, so "id <= max" would not be reproducible.
    """

    __tablename__ = "feedback_snapshot_items"

    snapshot_id: Mapped[str] = mapped_column(
        ForeignKey("feedback_snapshots.id", ondelete="CASCADE"), primary_key=True
    )
    feedback_id: Mapped[int] = mapped_column(
        BigId,
        ForeignKey("feedback.id"),
        primary_key=True,
    )


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    kind: Mapped[JobKind] = mapped_column(_enum(JobKind, "job_kind"))
    use_case: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    state: Mapped[JobState] = mapped_column(_enum(JobState, "job_state"))
    params: Mapped[dict[str, Any]]
    progress: Mapped[float] = mapped_column(Float)
    step: Mapped[int | None]  # training steps done of total_steps (None: not started)
    total_steps: Mapped[int | None]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int]
    max_attempts: Mapped[int]
    worker: Mapped[str | None] = mapped_column(String(255))
    cancel_requested: Mapped[bool] = mapped_column(Boolean)
    heartbeat_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # POST /v1/jobs with an Idempotency-Key: a retry with the same body gets the same job
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_sha256: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index(None, "state", "created_at"),  # claim: oldest queued first
        Index(None, "idempotency_key", unique=True),
    )


class JobMetricRow(Base):
    __tablename__ = "job_metrics"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int]
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float | None] = mapped_column(Float)  # None: not finite (SQLite has no NaN)
    time: Mapped[datetime]

    __table_args__ = (Index(None, "job_id", "name", "step"),)


class JobLogRow(Base):
    __tablename__ = "job_logs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    time: Mapped[datetime]
    line: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index(None, "job_id", "id"),)


class LabelingQueueRow(Base):
    """A use case's queue of pairs for people to compare, with its guidelines and overlap."""

    __tablename__ = "labeling_queues"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    use_case: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    name: Mapped[str] = mapped_column(String(256))
    guidelines: Mapped[str] = mapped_column(Text)
    overlap: Mapped[int]  # labelers wanted per pair
    created_by: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime]


class LabelingPairRow(Base):
    """Two logged completions of one prompt, waiting in a queue (canonical order 0, 1)."""

    __tablename__ = "labeling_pairs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    queue_id: Mapped[str] = mapped_column(ForeignKey("labeling_queues.id", ondelete="CASCADE"))
    completion_id_0: Mapped[str] = mapped_column(ForeignKey("completions.id"))
    completion_id_1: Mapped[str] = mapped_column(ForeignKey("completions.id"))
    created_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("queue_id", "completion_id_0", "completion_id_1"),
        Index(None, "queue_id", "id"),
    )


class LabelingVoteRow(Base):
    """A labeler's raw vote on a pair (or a skip), beside the feedback record it produced."""

    __tablename__ = "labeling_votes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pair_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("labeling_pairs.id", ondelete="CASCADE")
    )
    labeler: Mapped[str] = mapped_column(String(256))
    verdict: Mapped[str] = mapped_column(String(16))  # canonical: 0, 1, tie, both_bad, skip
    swapped: Mapped[bool] = mapped_column(Boolean)  # completion 1 was shown on the left (A)
    time_ms: Mapped[int | None]
    rationale: Mapped[str | None] = mapped_column(Text)
    feedback_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("feedback.id"))
    created_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint("verdict IN ('0', '1', 'tie', 'both_bad', 'skip')", name="verdict"),
        UniqueConstraint("pair_id", "labeler"),  # one vote per labeler and pair: idempotent
    )
