"""Audits: a study row of kind "audit" retrains a finished study's architectures at longer length.

An audit runs through the same runner, lease and heartbeat machinery as a search, so it is a row of
nas_studies: ``kind`` tells them apart, ``parent_id`` links an audit to the study it checks, ``audit_plan``
holds what it retrains (JSON: top, random, factor and the parent's trial numbers) and ``audit_result`` the
rank agreement it measured (JSON, written when it ends).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nas_studies") as batch:
        batch.add_column(sa.Column("kind", sa.String(20), nullable=False, server_default="search"))
        batch.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("audit_plan", sa.Text(), nullable=True))
        batch.add_column(sa.Column("audit_result", sa.Text(), nullable=True))
    op.create_index("ix_nas_studies_parent_id", "nas_studies", ["parent_id"])


def downgrade() -> None:
    op.drop_index("ix_nas_studies_parent_id", table_name="nas_studies")
    with op.batch_alter_table("nas_studies") as batch:
        for column in ("audit_result", "audit_plan", "parent_id", "kind"):
            batch.drop_column(column)
