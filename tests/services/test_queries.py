"""services.api.queries against Optuna's own view of the same study: counts, best trials (and their cache),
pages and trial bodies, on SQLite and PostgreSQL, with the marks' partial index (migrations 0003, 0005)."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from nas.store import trials
from nas.store.db import optuna_storage, session_scope, upgrade
from services.api import queries

DISTRIBUTIONS = {
    "block": CategoricalDistribution(["bert", "modernbert"]),
    "num_layers": IntDistribution(1, 3),
    "lr": FloatDistribution(5e-4, 5e-3, log=True),
}


def trial(state: TrialState, value: float | None = None, **attrs) -> optuna.trial.FrozenTrial:
    params = {"block": "modernbert", "num_layers": 2, "lr": 1e-3}
    return create_trial(
        state=state,
        values=None if value is None else [value],
        params=params,
        distributions=DISTRIBUTIONS,
        user_attrs={"architecture": {"num_layers": 2}, **attrs},
    )


def seeded(url: str, name: str = "q") -> tuple[optuna.Study, int]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    upgrade(url)
    study = optuna.create_study(storage=optuna_storage(url), study_name=name, direction="minimize")
    study.add_trials(
        [
            trial(TrialState.COMPLETE, 3.0, val_loss=3.0),
            trial(TrialState.COMPLETE, 2.0, val_loss=2.0, ray_trial_id="abc"),
            trial(TrialState.PRUNED, infeasible="params <= 1_000_000 violated"),
            trial(TrialState.PRUNED),
            trial(TrialState.FAIL, fail_reason="cancelled", lost=True),
            trial(TrialState.FAIL, fail_reason="boom"),
            # marks on a state that cannot carry them do not move a trial between counts
            trial(TrialState.COMPLETE, 4.0, lost=True),
            # a duplicate reuses its original's result (planted lower here: it must never be listed as the best)
            trial(TrialState.COMPLETE, 1.0, val_loss=1.0, duplicate_of=1),
            trial(TrialState.PRUNED, prescreened="zero_cost_snip 0.1, rank 4 of 4"),
            # copied by a warm start: a result of this space like any other, so it may be the best
            trial(TrialState.COMPLETE, 1.5, val_loss=1.5, warm_start_of="earlier#3"),
        ]
    )
    with session_scope(url) as session:
        return study, queries.optuna_study_id(session, name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'q.db'}"
    return request.getfixturevalue("postgres_url")


def test_counts_best_and_pages_match_optuna(url):
    study, study_id = seeded(url)
    with session_scope(url) as session:
        counts = queries.trial_counts(session, study_id, 10)
        assert (counts.complete, counts.pruned, counts.infeasible, counts.failed, counts.lost) == (3, 1, 1, 1, 1)
        assert (counts.duplicate, counts.prescreened, counts.warm_started) == (1, 1, 1)
        assert counts.finished == 5 and counts.running == 0
        # The SQL aggregates and the Python rule over Optuna's trials (CLI, progress bar) give the same counts.
        assert counts.model_dump(exclude={"finished", "budget"}) == trials.count_trials(study.get_trials())
        ids = queries.best_trial_ids(session, study_id, queries.directions(session, study_id))
        [best] = queries.load_trials(session, ids)
        assert best.number == trials.best_trials(study, 1)[0].number == 9 and best.values == [1.5]
        page, total = queries.trials_page(session, study_id, [], "number", False, 50, 0)
    assert total == 10 and [t.number for t in page] == list(range(10))
    for public, frozen in zip(page, study.get_trials()):
        assert public.state == frozen.state.name and public.params == frozen.params
        assert public.values == frozen.values and public.architecture == frozen.user_attrs["architecture"]
        assert public.started_at.tzinfo is not None and public.finished_at.tzinfo is not None
    assert "ray_trial_id" not in page[1].metrics and page[1].metrics["val_loss"] == 2.0


def test_a_better_trial_replaces_the_cached_best(url):
    study, study_id = seeded(url)
    with session_scope(url) as session:
        directions = queries.directions(session, study_id)
        first = queries.best_trial_ids(session, study_id, directions)
        assert queries.best_trial_ids(session, study_id, directions) == first  # from the cache
    running = study.ask()
    study.add_trial(trial(TrialState.COMPLETE, 9.0))  # a worse one: same answer, new key
    study.tell(running, 0.5)  # a better one finishing in place (RUNNING -> COMPLETE)
    with session_scope(url) as session:
        [best] = queries.load_trials(session, queries.best_trial_ids(session, study_id, directions))
    assert best.number == running.number == study.best_trial.number


def test_migrations_add_the_marks_partial_index_once_optunas_tables_exist(url):
    from sqlalchemy import inspect, text

    from nas.store.db import get_engine

    optuna_storage(url)  # Optuna's tables first, then ours
    upgrade(url)
    upgrade(url)
    names = [index["name"] for index in inspect(get_engine(url)).get_indexes("trial_user_attributes")]
    assert names.count(queries.MARKS_INDEX) == 1
    lookup = (
        "SELECT sql FROM sqlite_master WHERE name = :name"
        if url.startswith("sqlite")
        else "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
    )
    with get_engine(url).connect() as connection:
        definition = connection.execute(text(lookup), {"name": queries.MARKS_INDEX}).scalar_one()
    assert all(f"'{key}'" in definition for key in trials.MARK_KEYS)  # every mark the counts join on
    study, study_id = seeded(url, "after")  # Optuna writes through it as before
    with session_scope(url) as session:
        counts = queries.trial_counts(session, study_id, 10)  # the join over the partial index
    assert (counts.pruned, counts.infeasible, counts.failed, counts.lost, counts.duplicate) == (1, 1, 1, 1, 1)
    assert trials.best_trials(optuna.load_study(study_name="after", storage=optuna_storage(url)), 1)[0].number == 9


def test_trial_record__names_every_optuna_state_and_nothing_else():
    assert set(trials.TRIAL_STATE_NAMES) == {state.name for state in TrialState}
    assert all(state in trials.TRIAL_STATE_NAMES for state in trials.MARK_STATES.values())
