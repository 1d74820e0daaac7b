"""Labeling queues, their pairs of logged completions and labelers' raw votes (issue 14).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen copies of the column types, as in 0001.
Timestamp = sa.DateTime(timezone=False)
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "labeling_queues",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("use_case", sa.String(63), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("guidelines", sa.Text(), nullable=False),
        sa.Column("overlap", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_labeling_queues"),
    )
    op.create_index("ix_labeling_queues_use_case", "labeling_queues", ["use_case"])

    op.create_table(
        "labeling_pairs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("queue_id", sa.String(64), nullable=False),
        sa.Column("completion_id_0", sa.String(64), nullable=False),
        sa.Column("completion_id_1", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["queue_id"], ["labeling_queues.id"],
            name="fk_labeling_pairs_queue_id_labeling_queues", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["completion_id_0"], ["completions.id"],
            name="fk_labeling_pairs_completion_id_0_completions",
        ),
        sa.ForeignKeyConstraint(
            ["completion_id_1"], ["completions.id"],
            name="fk_labeling_pairs_completion_id_1_completions",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_labeling_pairs"),
        sa.UniqueConstraint(
            "queue_id", "completion_id_0", "completion_id_1",
            name="uq_labeling_pairs_queue_id_completion_id_0_completion_id_1",
        ),
    )
    op.create_index("ix_labeling_pairs_queue_id_id", "labeling_pairs", ["queue_id", "id"])

    op.create_table(
        "labeling_votes",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("pair_id", BigId, nullable=False),
        sa.Column("labeler", sa.String(256), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("swapped", sa.Boolean(), nullable=False),
        sa.Column("time_ms", sa.Integer(), nullable=True),
        sa.Column("rationale", sa.Text(), nullable=True),
        sa.Column("feedback_id", BigId, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.CheckConstraint(
            "verdict IN ('0', '1', 'tie', 'both_bad', 'skip')", name="ck_labeling_votes_verdict"
        ),
        sa.ForeignKeyConstraint(
            ["pair_id"], ["labeling_pairs.id"],
            name="fk_labeling_votes_pair_id_labeling_pairs", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["feedback_id"], ["feedback.id"], name="fk_labeling_votes_feedback_id_feedback"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_labeling_votes"),
        sa.UniqueConstraint("pair_id", "labeler", name="uq_labeling_votes_pair_id_labeler"),
    )


def downgrade() -> None:
    for table in ("labeling_votes", "labeling_pairs", "labeling_queues"):
        op.drop_table(table)
