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


def seeded(url: str, name: str = "q") -> tuple[optuna.Study, queries.OptunaStudy]:
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
        found = queries.optuna_study(session, name)
    assert found is not None and found.directions == ("minimize",)
    return study, found


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'q.db'}"
    return request.getfixturevalue("postgres_url")


def test_counts_best_and_pages_match_optuna(url):
    study, found = seeded(url)
    with session_scope(url) as session:
        totals = queries.study_totals(session, [found.id])[found.id]
        counts = totals.counts(10)
        assert (counts.complete, counts.pruned, counts.infeasible, counts.failed, counts.lost) == (3, 1, 1, 1, 1)
        assert (counts.duplicate, counts.prescreened, counts.warm_started) == (1, 1, 1)
        assert counts.finished == 5 and counts.running == 0
        # The SQL aggregates and the Python rule over Optuna's trials (CLI, progress bar) give the same counts.
        assert counts.model_dump(exclude={"finished", "budget"}) == trials.count_trials(study.get_trials())
        [best] = queries.best_trials(session, found, totals)
        assert best.number == trials.best_trials(study, 1)[0].number == 9 and best.values == [1.5]
        page, total = queries.trials_page(session, found.id, [], "number", False, 50, 0)
        by_value, complete = queries.trials_page(session, found.id, ["COMPLETE"], "value", True, 2, 1)
    assert total == 10 and [t.number for t in page] == list(range(10))
    assert complete == 5 and [t.values for t in by_value] == [[3.0], [2.0]]  # 4.0 skipped by the offset
    for public, frozen in zip(page, study.get_trials()):
        assert public.state == frozen.state.name and public.params == frozen.params
        assert public.values == frozen.values and public.architecture == frozen.user_attrs["architecture"]
        assert public.started_at.tzinfo is not None and public.finished_at.tzinfo is not None
    assert "ray_trial_id" not in page[1].metrics and page[1].metrics["val_loss"] == 2.0


def page_record(url: str, found: queries.OptunaStudy, number: int):
    with session_scope(url) as session:
        page, _ = queries.trials_page(session, found.id, [], "number", False, 1, number)
    return page[0]


def best_now(url: str, found: queries.OptunaStudy) -> list:
    with session_scope(url) as session:
        return queries.best_trials(session, found, queries.study_totals(session, [found.id])[found.id])


def test_a_better_trial_replaces_the_cached_best(url):
    study, found = seeded(url)
    first = best_now(url, found)
    assert best_now(url, found) == first and first[0].number == 9  # the second from the cache
    running = study.ask()
    study.add_trial(trial(TrialState.COMPLETE, 9.0))  # a worse one: same answer, new key
    study.tell(running, 0.5)  # a better one finishing in place (RUNNING -> COMPLETE)
    [best] = best_now(url, found)
    assert best.number == running.number == study.best_trial.number
    # A duplicate of it, told COMPLETE with a lower value planted, is never the best.
    study.add_trial(trial(TrialState.COMPLETE, 0.1, duplicate_of=running.number))
    assert [t.number for t in best_now(url, found)] == [running.number]


def test_a_list_of_studies_is_read_in_a_fixed_number_of_queries(url):
    """study_totals and optuna_studies answer for many studies at once; each study gets its own counts."""
    from sqlalchemy import event

    from nas.store.db import get_engine

    studies = [seeded(url, f"s{i}") for i in range(3)]
    studies[1][0].add_trial(trial(TrialState.COMPLETE, 0.7))
    statements: list[str] = []

    def record(*args) -> None:
        statements.append(args[2])

    event.listen(get_engine(url), "before_cursor_execute", record)
    try:
        with session_scope(url) as session:
            found = queries.optuna_studies(session, ["s0", "s1", "s2", "missing"])
            totals = queries.study_totals(session, [f.id for f in found.values()])
    finally:
        event.remove(get_engine(url), "before_cursor_execute", record)
    assert sorted(found) == ["s0", "s1", "s2"] and len(statements) <= 3  # names (cached already), states, marks
    assert [totals[found[f"s{i}"].id].counts(10).complete for i in range(3)] == [3, 4, 3]


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
    study, found = seeded(url, "after")  # Optuna writes through it as before
    with session_scope(url) as session:
        counts = queries.trial_counts(session, found.id, 10)  # the join over the partial index
    assert (counts.pruned, counts.infeasible, counts.failed, counts.lost, counts.duplicate) == (1, 1, 1, 1, 1)
    assert trials.best_trials(optuna.load_study(study_name="after", storage=optuna_storage(url)), 1)[0].number == 9


def test_trial_record__names_every_optuna_state_and_nothing_else():
    assert set(trials.TRIAL_STATE_NAMES) == {state.name for state in TrialState}
    assert all(state in trials.TRIAL_STATE_NAMES for state in trials.MARK_STATES.values())


def test_counts_follow_each_change_from_the_ledger_without_counting_again(url):
    """After the first read a study's totals come from the trials that changed: new ones, and ones that were running
    (finishing with or without a mark). Each read agrees with Optuna's own trials counted in Python."""
    study, found = seeded(url)

    def counted():
        with session_scope(url) as session:
            totals = queries.study_totals(session, [found.id])[found.id]
        assert totals.counts(99).model_dump(exclude={"finished", "budget"}) == trials.count_trials(study.get_trials())
        return totals

    first = counted()
    made = queries._LEDGERS.lookup((str(optuna_storage(url).engine.url), found.id)).counted_at
    running, marked_later = study.ask(), study.ask()
    assert counted().by_state["RUNNING"] == 2
    assert page_record(url, found, running.number).state == "RUNNING"
    study.tell(running, 0.25)  # finishes in place: COMPLETE, and the new best
    told = page_record(url, found, running.number)  # a running trial's record was not kept: read afresh
    assert told.state == "COMPLETE" and told.values == [0.25] and page_record(url, found, running.number) == told
    study._storage.set_trial_user_attr(marked_later._trial_id, "lost", True)  # marked while running, then told FAIL
    study.tell(marked_later, state=TrialState.FAIL)
    study.add_trial(trial(TrialState.PRUNED, infeasible="flops"))
    latest = counted()
    assert latest.counts(99).lost == first.counts(99).lost + 1 and latest.counts(99).infeasible == 2
    assert latest.complete_stamp[0] == first.complete_stamp[0] + 1 and "RUNNING" not in latest.by_state
    assert queries._LEDGERS.lookup((str(optuna_storage(url).engine.url), found.id)).counted_at == made
    assert [t.number for t in best_now(url, found)] == [running.number]


@pytest.mark.parametrize("descending", [False, True])
def test_pages_by_value__valued_trials_in_order_then_the_rest_by_number(url, descending):
    """Paged three at a time, across the boundary between trials with a value and trials without one."""
    study, found = seeded(url)
    valued = sorted(
        (t for t in study.get_trials() if t.values),
        key=lambda t: (-t.values[0] if descending else t.values[0], t.number),
    )
    expected = [t.number for t in valued] + [t.number for t in study.get_trials() if not t.values]
    with session_scope(url) as session:
        pages = [queries.trials_page(session, found.id, [], "value", descending, 3, o)[0] for o in range(0, 12, 3)]
    assert [t.number for page in pages for t in page] == expected
