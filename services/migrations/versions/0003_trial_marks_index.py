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

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLE = "trial_user_attributes"
INDEX = "ix_nas_trial_user_attributes_marked"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name not in ("postgresql", "sqlite"):
        return  # a partial index; the other dialects would build a full one over every attribute
    inspector = sa.inspect(bind)
    if not inspector.has_table(TABLE):
        return  # Optuna creates its tables after `alembic upgrade head` on a new database; see nas.store.db
    if any(index["name"] == INDEX for index in inspector.get_indexes(TABLE)):
        return
    where = sa.text("key IN ('infeasible', 'lost')")
    op.create_index(INDEX, TABLE, ["key", "trial_id"], postgresql_where=where, sqlite_where=where, if_not_exists=True)


def downgrade() -> None:
    bind = op.get_bind()
    if sa.inspect(bind).has_table(TABLE):
        op.drop_index(INDEX, table_name=TABLE, if_exists=True)
