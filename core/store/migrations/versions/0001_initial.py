"""Initial schema: completions, feedback, feedback snapshots, jobs with metrics and logs.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the column types (a revision must not follow later edits of models.py).
# Timestamps are naive UTC on both backends; 64-bit keys are INTEGER on SQLite (rowid alias).
Timestamp = sa.DateTime(timezone=False)
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def upgrade() -> None:
    op.create_table(
        "completions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("adapter", sa.String(63), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sampling_params", sa.JSON(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_completions"),
    )
    op.create_index("ix_completions_adapter_version", "completions", ["adapter", "version"])
    op.create_index("ix_completions_created_at", "completions", ["created_at"])

    op.create_table(
        "feedback",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("use_case", sa.String(63), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("candidate_0", sa.Text(), nullable=False),
        sa.Column("candidate_1", sa.Text(), nullable=False),
        sa.Column("completion_id_0", sa.String(64), nullable=True),
        sa.Column("completion_id_1", sa.String(64), nullable=True),
        sa.Column("choice", sa.SmallInteger(), nullable=False),
        sa.Column("labeler", sa.String(256), nullable=True),
        sa.Column("source", _enum("feedback_source", "human", "model"), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.CheckConstraint("choice IN (-1, 0, 1)", name="ck_feedback_choice"),
        sa.ForeignKeyConstraint(
            ["completion_id_0"], ["completions.id"], name="fk_feedback_completion_id_0_completions"
        ),
        sa.ForeignKeyConstraint(
            ["completion_id_1"], ["completions.id"], name="fk_feedback_completion_id_1_completions"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.UniqueConstraint(
            "use_case", "idempotency_key", name="uq_feedback_use_case_idempotency_key"
        ),
    )
    op.create_index("ix_feedback_completion_id_0", "feedback", ["completion_id_0"])
    op.create_index("ix_feedback_completion_id_1", "feedback", ["completion_id_1"])
    op.create_index("ix_feedback_use_case_id", "feedback", ["use_case", "id"])

    op.create_table(
        "feedback_snapshots",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("use_case", sa.String(63), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feedback_snapshots"),
    )
    op.create_index("ix_feedback_snapshots_use_case", "feedback_snapshots", ["use_case"])

    op.create_table(
        "feedback_snapshot_items",
        sa.Column("snapshot_id", sa.String(64), nullable=False),
        sa.Column("feedback_id", BigId, nullable=False),
        sa.ForeignKeyConstraint(
            ["feedback_id"], ["feedback.id"], name="fk_feedback_snapshot_items_feedback_id_feedback"
        ),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["feedback_snapshots.id"],
            name="fk_feedback_snapshot_items_snapshot_id_feedback_snapshots",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("snapshot_id", "feedback_id", name="pk_feedback_snapshot_items"),
    )

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", _enum("job_kind", "reward", "ppo", "dpo", "pipeline"), nullable=False),
        sa.Column("use_case", sa.String(63), nullable=False),
        sa.Column(
            "state",
            _enum("job_state", "queued", "running", "succeeded", "failed", "cancelled"),
            nullable=False,
        ),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("heartbeat_at", Timestamp, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("started_at", Timestamp, nullable=True),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_state_created_at", "jobs", ["state", "created_at"])
    op.create_index("ix_jobs_use_case", "jobs", ["use_case"])

    op.create_table(
        "job_metrics",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("time", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_metrics_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_job_metrics"),
    )
    op.create_index("ix_job_metrics_job_id_name_step", "job_metrics", ["job_id", "name", "step"])

    op.create_table(
        "job_logs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("time", Timestamp, nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_logs_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_job_logs"),
    )
    op.create_index("ix_job_logs_job_id_id", "job_logs", ["job_id", "id"])


def downgrade() -> None:
    for table in (
        "job_logs",
        "job_metrics",
        "jobs",
        "feedback_snapshot_items",
        "feedback_snapshots",
        "feedback",
        "completions",
    ):
        op.drop_table(table)  # drops the table's indexes with it
