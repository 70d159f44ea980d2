"""A partial index on Optuna's trial_user_attributes for the API's trial counts.

``queries.trial_counts`` counts a study's infeasible and lost trials (user attributes ``infeasible`` on PRUNED
and ``lost`` on FAIL trials). Optuna indexes trial_user_attributes only by (trial_id, key), so PostgreSQL read
every user attribute of every study for that count (25 ms with one 10,000-trial study, and growing with the
whole database). This index holds just those two keys: the count reads a few hundred entries.

Optuna owns the table, so this is additive only: it is created if the table is there and the index is not
(inspected first, and IF NOT EXISTS), and skipped when Optuna's tables do not exist yet. Optuna's inserts and
its own migrations are unaffected (an extra index on a table Optuna alters in place; dropped on downgrade).

``nas.store.db.upgrade`` creates Optuna's tables before it runs the migrations, so the table is there.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from nas.store.db import MARKS_INDEX, remake_marks_index

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    remake_marks_index(("infeasible", "lost"))


def downgrade() -> None:
    bind = op.get_bind()
    if sa.inspect(bind).has_table("trial_user_attributes"):
        op.drop_index(MARKS_INDEX, table_name="trial_user_attributes", if_exists=True)
