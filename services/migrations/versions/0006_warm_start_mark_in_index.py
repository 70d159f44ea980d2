"""The marks index (0003, 0005) also holds ``warm_start_of``: finished trials a warm start copied from an earlier
study of the same space. ``queries.trial_counts`` counts them apart from the trials this study trained (they used
no budget). Same rules as 0005.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from nas.store.db import remake_marks_index

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    remake_marks_index(("infeasible", "lost", "duplicate_of", "prescreened", "warm_start_of"))


def downgrade() -> None:
    remake_marks_index(("infeasible", "lost", "duplicate_of", "prescreened"))
