"""Optuna's ``RDBStorage`` with every call that reaches the database retried through an outage
(:func:`nas.store.outage.call_with_retry`), so a PostgreSQL restart mid-study stalls the searcher for a few seconds
instead of failing the study. Imported only where Optuna is (``nas.store.db.optuna_storage``).

Retrying a write whose commit reached the server just before the connection dropped could apply it twice. Most
writes here are upserts (attributes, intermediate values, parameters). A finished trial told again is recognised
below. A trial created twice leaves one RUNNING orphan that the end of the run marks lost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from nas.store.outage import call_with_retry

# RDBStorage's methods that open a session (public, and the private ones Optuna's _CachedStorage calls directly).
RETRIED_METHODS = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "_create_new_trial",
    "set_trial_param",
    "_set_trial_param",
    "get_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
    "_get_trials",
    "get_best_trial",
    "_get_best_trial_id",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "record_heartbeat",
    "_get_stale_trial_ids",
)


def _retried(method: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(method)
    def call(self, *args, **kwargs):
        return call_with_retry(lambda: method(self, *args, **kwargs), method.__name__)

    return call


class ResilientRDBStorage(RDBStorage):
    """``RDBStorage`` that waits out database outages (bounded by ``NAS_DB_RETRY_S``)."""

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        attempts = 0

        def attempt() -> bool:
            nonlocal attempts
            attempts += 1
            try:
                return RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except UpdateFinishedTrialError:
                # On a retry: the attempt the connection dropped under had committed this very state.
                if attempts > 1 and RDBStorage.get_trial(self, trial_id).state == state:
                    return True
                raise

        return call_with_retry(attempt, "set_trial_state_values")


for _name in RETRIED_METHODS:
    setattr(ResilientRDBStorage, _name, _retried(getattr(RDBStorage, _name)))
