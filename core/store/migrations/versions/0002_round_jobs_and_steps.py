"""Jobs: the pipeline kind is called ``round``; progress as step / total_steps; idempotency keys.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CHECK = "ck_jobs_job_kind"


def _kinds(*values: str) -> str:
    return "kind IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def _swap_kind(old: str, new: str, kinds: tuple[str, ...]) -> None:
    # SQLite cannot alter a CHECK constraint: batch mode rebuilds the table (env.py).
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f(CHECK), type_="check")
    op.execute(sa.text("UPDATE jobs SET kind = :new WHERE kind = :old").bindparams(new=new, old=old))
    with op.batch_alter_table("jobs") as batch:
        batch.create_check_constraint(op.f(CHECK), sa.text(_kinds(*kinds)))


def upgrade() -> None:
    _swap_kind("pipeline", "round", ("reward", "ppo", "dpo", "round"))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("step", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("total_steps", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("request_sha256", sa.String(64), nullable=True))
    op.create_index("ix_jobs_idempotency_key", "jobs", ["idempotency_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_jobs_idempotency_key", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("request_sha256")
        batch.drop_column("idempotency_key")
        batch.drop_column("total_steps")
        batch.drop_column("step")
    _swap_kind("round", "pipeline", ("reward", "ppo", "dpo", "pipeline"))
