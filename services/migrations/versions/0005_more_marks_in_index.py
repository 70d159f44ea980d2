"""The marks index (0003) also holds ``duplicate_of`` and ``prescreened``: samples the study had trained already,
and samples a pre-screen scored at initialisation and did not train.

``queries.trial_counts`` counts marked trials per mark; neither kind used budget, so each is counted apart from
the trials that trained. Same rules as 0003: additive on Optuna's table, created only
where the table exists, dropped and re-made with the new key list (the same name, so 0003's downgrade still
finds it).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLE = "trial_user_attributes"
INDEX = "ix_nas_trial_user_attributes_marked"


def _remake(keys: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name not in ("postgresql", "sqlite"):
        return  # a partial index; the other dialects would build a full one over every attribute
    if not sa.inspect(bind).has_table(TABLE):
        return  # Optuna creates its tables after `alembic upgrade head` on a new database; see nas.store.db
    op.drop_index(INDEX, table_name=TABLE, if_exists=True)
    where = sa.text(f"key IN ({keys})")
    op.create_index(INDEX, TABLE, ["key", "trial_id"], postgresql_where=where, sqlite_where=where, if_not_exists=True)


def upgrade() -> None:
    _remake("'infeasible', 'lost', 'duplicate_of', 'prescreened'")


def downgrade() -> None:
    _remake("'infeasible', 'lost'")
