"""Runner leases on studies, API tokens, runner heartbeats.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nas_studies") as batch:
        batch.add_column(sa.Column("runner_id", sa.String(100), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_nas_studies_created_at", "nas_studies", ["created_at"])
    op.create_table(
        "nas_tokens",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_nas_tokens_name", "nas_tokens", ["name"])
    op.create_index("ix_nas_tokens_token_hash", "nas_tokens", ["token_hash"], unique=True)
    op.create_table(
        "nas_runners",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("hostname", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("nas_runners")
    op.drop_table("nas_tokens")
    op.drop_index("ix_nas_studies_created_at", "nas_studies")
    with op.batch_alter_table("nas_studies") as batch:
        for column in ("attempts", "cancel_requested", "lease_expires_at", "runner_id"):
            batch.drop_column(column)
