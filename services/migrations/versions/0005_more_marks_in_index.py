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

from nas.store.db import remake_marks_index

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    remake_marks_index(("infeasible", "lost", "duplicate_of", "prescreened"))


def downgrade() -> None:
    remake_marks_index(("infeasible", "lost"))
