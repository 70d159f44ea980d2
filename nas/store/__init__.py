"""The SQL store of record: the service's study table (Alembic-migrated) beside Optuna's tables."""

from nas.store.db import get_engine, session_scope, upgrade
from nas.store.models import Study
from nas.store.studies import (
    StudyExists,
    StudyNotFound,
    create_study_row,
    get_study_row,
    latest_audit_report,
    list_study_rows,
    set_status,
)
from nas.store.trials import FINAL_STATUSES, STUDY_STATUSES

__all__ = [
    "FINAL_STATUSES",
    "STUDY_STATUSES",
    "Study",
    "StudyExists",
    "StudyNotFound",
    "create_study_row",
    "get_engine",
    "get_study_row",
    "latest_audit_report",
    "list_study_rows",
    "session_scope",
    "set_status",
    "upgrade",
]
