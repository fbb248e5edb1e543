"""Shared state for several service replicas: leases on unlabelled samples, one learning
job per target (a lease, and a log of every job run), update payloads in the database.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A labeller's claim on an unlabelled sample, until this time (then anyone's again).
    op.add_column("samples", sa.Column("claim_until_ms", sa.BigInteger, nullable=True))
    op.create_table(
        "learning_leases",
        sa.Column("target", sa.Text, primary_key=True),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
        sa.Column("started_ms", sa.BigInteger, nullable=False))
    op.create_table(
        "learning_runs",
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("started_ms", sa.BigInteger, nullable=False),
        sa.Column("ended_ms", sa.BigInteger, nullable=True),
        sa.Column("outcome", sa.Text, nullable=False, server_default=""))
    op.create_index("learning_runs_by_target", "learning_runs", ["target", "started_ms"])
    op.create_table(
        "artifacts",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False))


def downgrade() -> None:
    op.drop_table("artifacts")
    op.drop_index("learning_runs_by_target", "learning_runs")
    op.drop_table("learning_runs")
    op.drop_table("learning_leases")
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("claim_until_ms")
