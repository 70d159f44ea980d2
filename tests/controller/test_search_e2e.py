"""Real searches on a local Ray, stored in a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import math
import random

import optuna
import pytest
from optuna.trial import TrialState

from nas.controller import run_study
from nas.controller.cluster import TrialDoesNotFit
from nas.space import load_space
from nas.store import get_study_row
from nas.store.db import optuna_storage
from tests.conftest import COST_METRICS, ONE_BERT_SHAPE, SPACES

pytestmark = pytest.mark.ray

SMALL = ["search.trials=3", "search.concurrency=1", "proxy.eval_every=5", "proxy.steps=10", "proxy.eval_batches=2"]
PER_FAMILY = {
    "text-mlm-tiny": SMALL
    + [
        "data.max_samples=400",
        "data.vocab_size=256",
        "architecture.num_layers={int: [1, 2]}",
        "architecture.hidden_size={choice: [32, 64]}",
    ],
    "vit-mae-tiny": SMALL + ["architecture.num_layers=1"],
    "cnn-contrastive-tiny": SMALL + ["architecture.num_stages=1"],
}
METRICS = (
    "architecture",
    "hyperparameters",
    "family",
    "data_shape",
    *COST_METRICS,
    "val_loss",
    "step",
    "zero_cost_grad_norm",
    "zero_cost_snip",
    "zero_cost_ms",
)


def load_optuna(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=optuna_storage(url))


def assert_trials_recorded(study: optuna.Study, space) -> None:
    trials = [t for t in study.trials if "infeasible" not in t.user_attrs and "duplicate_of" not in t.user_attrs]
    assert len(trials) == space.search.trials
    for trial in trials:
        assert trial.state in (TrialState.COMPLETE, TrialState.PRUNED), trial.user_attrs.get("fail_reason")
        for key in METRICS:
            assert key in trial.user_attrs, (trial.number, key)
        finished = trial.user_attrs["step"] == space.proxy.steps
        assert finished == (trial.state == TrialState.COMPLETE)
        assert trial.user_attrs["device"] == "cpu" and trial.user_attrs["cuda_visible_devices"] == ""
        assert len(trial.user_attrs["node_id"]) == 56  # the Ray node it ran on (hex id)
        for score in ("zero_cost_grad_norm", "zero_cost_snip"):
            assert math.isfinite(trial.user_attrs[score]) and trial.user_attrs[score] > 0, (trial.number, score)
        if trial.state == TrialState.COMPLETE:  # the curves come with the last report, which a pruned trial lacks
            assert trial.user_attrs["val_curve"][-1][0] == space.proxy.steps
            assert trial.user_attrs["train_curve"][-1][0] == space.proxy.steps
            objective = space.objectives[0]
            assert trial.values[0] == pytest.approx(trial.user_attrs[objective])
            assert space.feasibility(space.candidate(trial.user_attrs["architecture"], {})) == []


@pytest.mark.parametrize("space_name", sorted(PER_FAMILY))
def test_search__runs_each_family_end_to_end_on_sqlite(ray_cluster, sqlite_url, space_name):
    space = load_space(SPACES / f"{space_name}.yaml", PER_FAMILY[space_name])
    outcome = run_study(space, f"e2e-{space_name}", sqlite_url, progress=False)
    assert outcome.status == "succeeded", outcome
    study = load_optuna(sqlite_url, f"e2e-{space_name}")
    assert_trials_recorded(study, space)
    assert study.user_attrs["family"] == space.family
    row = get_study_row(sqlite_url, f"e2e-{space_name}")
    assert row.status == "succeeded" and row.finished_at is not None and row.trials == 3
    if space.task != "mlm":  # digits carry labels: the kNN probe ran on every finished trial
        assert all("knn_accuracy" in t.user_attrs for t in study.trials if t.state == TrialState.COMPLETE)


@pytest.mark.postgres
def test_search__text_on_postgresql(ray_cluster, postgres_url):
    space = load_space(SPACES / "text-mlm-tiny.yaml", PER_FAMILY["text-mlm-tiny"])
    outcome = run_study(space, "e2e-postgres", postgres_url, progress=False)
    assert outcome.status == "succeeded"
    assert_trials_recorded(load_optuna(postgres_url, "e2e-postgres"), space)
    assert get_study_row(postgres_url, "e2e-postgres").status == "succeeded"


def test_search__a_gpu_trial_on_a_cluster_without_gpus_fails_at_once_and_says_so(ray_cluster, sqlite_url):
    space = load_space(SPACES / "text-mlm-tiny.yaml", [*PER_FAMILY["text-mlm-tiny"], "resources_per_trial.gpu=1"])
    with pytest.raises(TrialDoesNotFit, match=r"resources_per_trial.gpu is 1, but the Ray cluster has no GPU"):
        run_study(space, "wants-a-gpu", sqlite_url, progress=False)
    row = get_study_row(sqlite_url, "wants-a-gpu")
    assert row.status == "failed" and "has no GPU" in (row.error or "")
    with pytest.raises(KeyError):  # it failed before the Optuna study, let alone a trial, was made
        load_optuna(sqlite_url, "wants-a-gpu")


def test_search__early_stopped_trials_are_pruned_not_complete(ray_cluster, sqlite_url):
    # A fixed architecture and two learning rates; RandomSampler(seed=6) proposes 3e-3 first, then 3e-3 again (a
    # duplicate: its result is reused) and 1e-6. Trials run one at a time, so ASHA (reduction factor 2) must stop
    # the 1e-6 trials at their first rung.
    space = load_space(
        SPACES / "text-mlm-tiny.yaml",
        [
            "search.trials=4",
            "search.concurrency=1",
            "search.sampler=random",
            "search.seed=6",
            "search.scheduler=asha",
            "proxy.steps=20",
            "proxy.eval_every=5",
            "proxy.eval_batches=2",
            "data.max_samples=400",
            "data.vocab_size=256",
            *ONE_BERT_SHAPE,
            "hyperparameters.lr={choice: [3.0e-3, 1.0e-6]}",
        ],
    )
    outcome = run_study(space, "asha", sqlite_url, progress=False)
    assert outcome.status == "succeeded"
    study = load_optuna(sqlite_url, "asha")
    assert_trials_recorded(study, space)
    slow = [t for t in study.trials if t.params["lr"] == 1.0e-6]
    assert slow and all(t.state == TrialState.PRUNED for t in slow)
    assert all(t.user_attrs["step"] < space.proxy.steps for t in slow)
    assert any(t.state == TrialState.COMPLETE for t in study.trials)
    assert any("duplicate_of" in t.user_attrs for t in study.trials)
    assert all(t.intermediate_values for t in study.trials if "duplicate_of" not in t.user_attrs)


def test_search__infeasible_samples_are_skipped_and_a_failing_trial_fails_alone(ray_cluster, sqlite_url):
    space = load_space(
        SPACES / "text-mlm-tiny.yaml",
        PER_FAMILY["text-mlm-tiny"]
        + [
            "search.scheduler=none",
            "architecture.num_heads={choice: [2, 3]}",
            "hyperparameters.lr={choice: [3.0e-3, 1.0e+30]}",
            "search.sampler=random",
            "search.trials=4",
        ],
    )
    outcome = run_study(space, "failing", sqlite_url, progress=False)
    study = load_optuna(sqlite_url, "failing")
    infeasible = [t for t in study.trials if "infeasible" in t.user_attrs]
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert infeasible and all(
        t.state == TrialState.PRUNED and "does not divide" in t.user_attrs["infeasible"] for t in infeasible
    )
    assert failed and all("loss became" in t.user_attrs["fail_reason"] for t in failed)
    assert all(t.params["lr"] == 1.0e30 for t in failed)
    assert outcome.counts["complete"] + outcome.counts["failed"] == 4
    assert outcome.status == ("succeeded" if outcome.counts["complete"] else "failed")


def test_search__hard_limits_flops_before_launch_latency_on_the_worker_and_the_sampler_sees_both(
    ray_cluster, sqlite_url
):
    """A FLOPs limit rejects samples before Ray sees them; a latency limit no model can meet stops every trial
    before its first step. TPE learns from both: every told trial carries its constraint values."""
    space = load_space(
        SPACES / "text-mlm-tiny.yaml",
        PER_FAMILY["text-mlm-tiny"]
        + ["search.sampler=tpe", "constraints=[flops <= 6_000_000, latency_ms <= 0.000001]", "search.trials=3"],
    )
    flops = sorted({space.sample_random(random.Random(i)).flops for i in range(40)})
    assert flops[0] <= 6_000_000 < flops[-1]  # the limit splits the space
    outcome = run_study(space, "limits", sqlite_url, progress=False)
    assert outcome.status == "failed" and "latency_ms <= 0.000001" in outcome.error
    study = load_optuna(sqlite_url, "limits")
    infeasible = [t for t in study.trials if "infeasible" in t.user_attrs]
    trained = [t for t in study.trials if "infeasible" not in t.user_attrs]
    assert infeasible and all("flops <= 6_000_000" in t.user_attrs["infeasible"] for t in infeasible)
    assert all(t.user_attrs["flops"] > 6_000_000 for t in infeasible)
    assert len(trained) == 3 and outcome.counts["pruned"] == 3
    for trial in trained:
        assert trial.state == TrialState.PRUNED and trial.user_attrs["step"] == 0  # never trained
        assert "latency_ms <= 0.000001 (latency_ms = " in trial.user_attrs["constraint_violation"]
        assert trial.user_attrs["latency_ms"] > 0 and "val_loss" not in trial.user_attrs
    # What TPE reads (FrozenTrial.constraints): positive where a limit is broken.
    for trial in study.trials:
        assert list(trial.constraints) == ["flops <= 6_000_000", "latency_ms <= 0.000001"]
        flops_value, latency_value = trial.constraints.values()
        assert (flops_value > 0) == ("infeasible" in trial.user_attrs)
        assert (latency_value > 0) == ("infeasible" not in trial.user_attrs)


def test_search__a_sample_trained_already_reuses_its_result_without_a_ray_trial(ray_cluster, sqlite_url):
    """Two distinct samples in the whole space: once both are trained, every further sample is a duplicate,
    told COMPLETE with its original's result and marked, until the searcher gives up on new ones."""
    space = load_space(
        SPACES / "text-mlm-tiny.yaml",
        PER_FAMILY["text-mlm-tiny"]
        + [
            *ONE_BERT_SHAPE,
            "hyperparameters.lr={choice: [3.0e-3, 1.0e-3]}",
            "search.sampler=random",
            "search.scheduler=none",
            "search.trials=4",
            "search.max_infeasible=6",
        ],
    )
    outcome = run_study(space, "duplicates", sqlite_url, progress=False)
    assert outcome.status == "succeeded" and "already-trained" in outcome.error
    assert outcome.counts["complete"] == 2 and outcome.counts["duplicate"] >= 6
    study = load_optuna(sqlite_url, "duplicates")
    trained = {t.number: t for t in study.trials if "duplicate_of" not in t.user_attrs}
    assert sorted(t.params["lr"] for t in trained.values()) == [1.0e-3, 3.0e-3]
    duplicates = [t for t in study.trials if "duplicate_of" in t.user_attrs]
    for duplicate in duplicates:
        original = trained[duplicate.user_attrs["duplicate_of"]]
        assert duplicate.state == original.state == TrialState.COMPLETE and duplicate.number > original.number
        assert duplicate.params == original.params and duplicate.values == original.values
        assert duplicate.user_attrs["candidate_key"] == original.user_attrs["candidate_key"]
        assert duplicate.user_attrs["val_loss"] == original.user_attrs["val_loss"]
        assert "ray_trial_id" not in duplicate.user_attrs  # no Ray trial ran for it
    # The best list names each trained result once.
    from nas.store.trials import best_trials

    assert [t.number for t in best_trials(study)] == sorted(trained, key=lambda n: trained[n].value)


def test_search__prescreen_trains_only_the_best_scoring_samples_of_a_pool(ray_cluster, sqlite_url):
    """A pool of 8 fresh samples scored at initialisation; the best quarter (2) is kept, the budget (1) trains the
    best of them, and the rest is told PRUNED with its score, using no budget."""
    space = load_space(
        SPACES / "text-mlm-tiny.yaml",
        PER_FAMILY["text-mlm-tiny"]
        + [
            "architecture.num_heads=2",
            "search.scheduler=none",
            "search.trials=1",
            "search.prescreen={score: zero_cost_snip, pool: 8, keep: 0.25}",
        ],
    )
    outcome = run_study(space, "screened", sqlite_url, progress=False)
    assert outcome.status == "succeeded", outcome
    assert outcome.counts["complete"] == 1 and outcome.counts["prescreened"] == 7
    study = load_optuna(sqlite_url, "screened")
    [trained] = study.get_trials(states=(TrialState.COMPLETE,))
    screened = [t for t in study.trials if "prescreened" in t.user_attrs]
    assert len(screened) == 7 and all(t.state == TrialState.PRUNED for t in screened)
    assert not any("infeasible" in t.user_attrs for t in study.trials)  # num_heads=2 divides every width

    def snip(trial):
        return trial.user_attrs["zero_cost_snip"]

    ranked_out = [t for t in screened if "rank" in t.user_attrs["prescreened"]]
    [unreached] = [t for t in screened if "not trained" in t.user_attrs["prescreened"]]  # kept; the budget ended
    assert len(ranked_out) == 6 and "ray_trial_id" not in unreached.user_attrs
    # Kept in score order: the trained one (its score recorded again by the worker, on the same seed and batch)
    # ranked first, the unreached one second, the six screened out below both.
    assert snip(trained) >= snip(unreached) >= max(snip(t) for t in ranked_out)
    assert all(t.user_attrs["candidate_key"] != trained.user_attrs["candidate_key"] for t in screened)


def test_search__a_warm_start_copies_finished_trials_without_rerunning_them_and_refuses_another_space(
    ray_cluster, sqlite_url
):
    """Three distinct samples in the whole space (one shape, three rates). The first study trains two; a second
    study warm-started from it copies both (no Ray trial, no budget) and trains only the third. A space whose
    proxy differs, a missing study and the study itself are refused before any row is written."""
    one_shape = PER_FAMILY["text-mlm-tiny"] + [
        *ONE_BERT_SHAPE,
        "hyperparameters.lr={choice: [1.0e-3, 2.0e-3, 3.0e-3]}",
        "search.sampler=random",
        "search.scheduler=none",
    ]
    first_space = load_space(SPACES / "text-mlm-tiny.yaml", one_shape + ["search.trials=2"])
    assert run_study(first_space, "first", sqlite_url, progress=False).counts["complete"] == 2
    space = load_space(SPACES / "text-mlm-tiny.yaml", one_shape + ["search.trials=1", "search.warm_start=[first]"])
    outcome = run_study(space, "second", sqlite_url, progress=False)
    assert outcome.status == "succeeded", outcome
    assert outcome.counts["warm_started"] == 2 and outcome.counts["complete"] == 1
    first, second = load_optuna(sqlite_url, "first"), load_optuna(sqlite_url, "second")
    originals = {f"first#{t.number}": t for t in first.trials}
    copies = [t for t in second.trials if "warm_start_of" in t.user_attrs]
    assert len(copies) == 2
    for copy in copies:
        original = originals[copy.user_attrs["warm_start_of"]]
        assert copy.state == TrialState.COMPLETE and copy.values == original.values and copy.params == original.params
        assert copy.user_attrs["val_loss"] == original.user_attrs["val_loss"]
        assert copy.user_attrs["weights_path"] == original.user_attrs["weights_path"]  # the export reads these
        assert "ray_trial_id" not in copy.user_attrs  # not run again
    [trained] = [t for t in second.trials if "ray_trial_id" in t.user_attrs]
    assert trained.params["lr"] not in {t.params["lr"] for t in first.trials}
    # Samples equal to a copied trial reuse it as a duplicate; the best list may name a copied trial.
    duplicates = [t for t in second.trials if "duplicate_of" in t.user_attrs]
    assert all(second.trials[t.user_attrs["duplicate_of"]] in copies + [trained] for t in duplicates)
    from nas.store.trials import best_trials

    assert {t.number for t in best_trials(second)} == {t.number for t in [*copies, trained]}
    # The same corpus: the data prepared for the first study is reused.
    assert first.user_attrs["data_fingerprint"] == second.user_attrs["data_fingerprint"]
    from nas.data.prepare import prepare_data

    assert prepare_data(space.data, "text", 0).cache_hit
    # A resumed run copies nothing twice.
    assert run_study(space, "second", sqlite_url, progress=False, create_row=False).counts["warm_started"] == 2

    from nas.space import SpaceError
    from nas.store.studies import StudyNotFound

    refused = [
        ("other-proxy", ["proxy.steps=20", "proxy.eval_every=10"], ["first"], "proxy.steps: 20 vs 10"),
        ("missing", [], ["first", "never-ran"], "no study named 'never-ran'"),
        ("itself", [], ["itself"], "cannot warm-start from itself"),
    ]
    for name, changes, sources, message in refused:
        other = load_space(SPACES / "text-mlm-tiny.yaml", one_shape + changes + [f"search.warm_start={sources}"])
        with pytest.raises(SpaceError) as error:
            run_study(other, name, sqlite_url, progress=False)
        assert f"search.warm_start[{len(sources) - 1}]" in str(error.value) and message in str(error.value)
        with pytest.raises(StudyNotFound):
            get_study_row(sqlite_url, name)  # nothing written

    # Constraints are not part of the fingerprint: they are applied again to every copied trial.
    from nas.controller.warm_start import seed_study

    strict = load_space(
        SPACES / "text-mlm-tiny.yaml", one_shape + ["constraints=[lr <= 1.5e-3]", "search.warm_start=[first]"]
    )
    assert strict.fingerprint == space.fingerprint
    target = optuna.create_study(study_name="strict", storage=optuna_storage(sqlite_url))
    report = seed_study(target, optuna_storage(sqlite_url), strict, first.user_attrs["data_fingerprint"])
    rates = [t.params["lr"] for t in first.trials if "ray_trial_id" in t.user_attrs]
    assert (report.copied, report.rejected) == (rates.count(1.0e-3), 2 - rates.count(1.0e-3))
    assert all(t.params["lr"] == 1.0e-3 and t.constraints[0] < 0 for t in target.trials)  # the new space's values


def test_search__multi_objective_nsga2_with_hyperband_gives_a_pareto_front(ray_cluster, sqlite_url):
    space = load_space(
        SPACES / "vit-mae-tiny.yaml",
        SMALL
        + [
            "objectives=[val_loss, params]",
            "search.sampler=nsga2",
            "search.scheduler=hyperband",
            "search.trials=4",
            "architecture.num_layers={int: [1, 2]}",
        ],
    )
    outcome = run_study(space, "pareto", sqlite_url, progress=False)
    assert outcome.status == "succeeded"
    study = load_optuna(sqlite_url, "pareto")
    assert len(study.directions) == 2
    assert_trials_recorded(study, space)
    front = study.best_trials
    assert front and all(t.values[1] == t.user_attrs["params"] for t in front)


def test_search__a_predicted_loss_objective_is_what_the_sampler_sees_and_both_losses_are_stored(
    ray_cluster, sqlite_url
):
    space = load_space(
        SPACES / "text-mlm-tiny.yaml",
        PER_FAMILY["text-mlm-tiny"]
        + ["proxy.steps=12", "proxy.eval_every=3", "proxy.predict=power_law", "objectives=[predicted_loss]"],
    )
    assert run_study(space, "predicted", sqlite_url, progress=False).status == "succeeded"
    study = load_optuna(sqlite_url, "predicted")
    assert study.user_attrs["objectives"] == ["predicted_loss"]
    assert_trials_recorded(study, space)
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        assert trial.value == attrs["predicted_loss"] != attrs["val_loss"]
        assert [step for step, _ in attrs["val_curve"]] == [3, 6, 9, 12]
        assert attrs["val_curve"][-1][1] == attrs["val_loss"]
        # The scheduler and the sampler saw the predicted loss as the intermediate values too.
        assert trial.intermediate_values[max(trial.intermediate_values)] == pytest.approx(attrs["predicted_loss"])
