"""`nas audit` end to end: a finished tiny study, its audit through the CLI, on a real Ray and SQLite file."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from scipy import stats

from nas.audit.run import add_audit_row, audit_report, plan_audit, run_audit
from nas.cli import main
from nas.controller import run_study
from nas.space import load_space
from nas.store import Study, get_study_row, session_scope
from nas.store.db import optuna_storage
from tests.conftest import SPACES, nas_home_set_to

pytestmark = pytest.mark.ray

# Every trial runs to the end (no scheduler) and the proxy predicts its loss at 10x.
PARENT = [
    "search.trials=4",
    "search.concurrency=1",
    "search.scheduler=none",
    "proxy.steps=8",
    "proxy.eval_every=2",
    "proxy.eval_batches=2",
    "proxy.predict=power_law",
    "objectives=[predicted_loss]",
    "data.max_samples=400",
    "data.vocab_size=256",
    "architecture.num_layers={int: [1, 2]}",
    "architecture.hidden_size={choice: [32, 64]}",
]


@pytest.fixture(scope="module")
def parent_database(ray_cluster, tmp_path_factory) -> Path:
    """One finished 4-trial study named "parent", trained once; each test audits its own copy of the file."""
    home = tmp_path_factory.mktemp("audit_parent")
    with nas_home_set_to(home):
        url = f"sqlite:///{home / 'parent.db'}"
        assert run_study(load_space(SPACES / "text-mlm-tiny.yaml", PARENT), "parent", url, progress=False).status == (
            "succeeded"
        )
    return home / "parent.db"


@pytest.fixture
def parent_url(parent_database, tmp_path) -> str:
    copy = tmp_path / "nas.db"
    # SQLite's backup API, not a file copy: the study's last writes may still sit in its write-ahead log.
    with (
        contextlib.closing(sqlite3.connect(parent_database)) as source,
        contextlib.closing(sqlite3.connect(copy)) as target,
    ):
        source.backup(target)
    return f"sqlite:///{copy}"


def test_audit__retrains_the_top_and_random_trials_longer_and_reports_rank_agreement(parent_url, tmp_path, capsys):
    parent = optuna.load_study(study_name="parent", storage=optuna_storage(parent_url))
    by_proxy = sorted(parent.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)

    code = main(
        [
            "audit",
            "parent",
            "--top",
            "2",
            "--random",
            "1",
            "--factor",
            "2",
            "--plots",
            str(tmp_path),
            "--storage",
            parent_url,
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "the study's proxy" in printed and "non-embedding params" in printed and "zero-cost score" in printed

    row = get_study_row(parent_url, "parent-audit")
    assert row.kind == "audit" and row.status == "succeeded"
    assert row.parent_id == get_study_row(parent_url, "parent").id
    audit = optuna.load_study(study_name="parent-audit", storage=optuna_storage(parent_url))
    audited = audit.get_trials(states=(TrialState.COMPLETE,))
    assert len(audited) == 3
    numbers = {t.user_attrs["parent_trial"] for t in audited}
    assert {by_proxy[0].number, by_proxy[1].number} < numbers  # the two best by the proxy, plus one other
    for trial in audited:
        source = parent.trials[trial.user_attrs["parent_trial"]]
        assert trial.user_attrs["architecture"] == source.user_attrs["architecture"]
        assert trial.user_attrs["hyperparameters"] == source.user_attrs["hyperparameters"]
        assert trial.user_attrs["step"] == 16  # 2x the proxy's 8 steps
        assert trial.value == pytest.approx(trial.user_attrs["val_loss"])

    import json

    report = json.loads(row.audit_result)
    assert report["finished"] == report["planned"] == 3
    rows = sorted(report["trials"], key=lambda r: r["parent_trial"])
    # Each row pairs a parent trial's proxy score with its own long run.
    long_runs = {t.user_attrs["parent_trial"]: t.value for t in audited}
    assert [r["long_run"] for r in rows] == [long_runs[r["parent_trial"]] for r in rows]
    assert [r["proxy"] for r in rows] == [parent.trials[r["parent_trial"]].value for r in rows]
    expected = stats.kendalltau(
        [parent.trials[n].value for n in sorted(long_runs)], [long_runs[n] for n in sorted(long_runs)]
    )
    assert report["proxy"]["kendall_tau"] == pytest.approx(expected.statistic)
    assert (tmp_path / "audit.png").stat().st_size > 0

    assert main(["studies", "show", "parent", "--storage", parent_url]) == 0
    assert "audit of parent: 3 of 3 architectures" in capsys.readouterr().out


def test_audit__refuses_a_study_it_cannot_rank(ray_cluster, sqlite_url, capsys):
    space = load_space(SPACES / "text-mlm-tiny.yaml", [*PARENT, "search.trials=1"])
    run_study(space, "lonely", sqlite_url, progress=False)
    assert main(["audit", "lonely", "--storage", sqlite_url, "--no-progress"]) == 1
    assert "has 1 completed trial(s); an audit ranks at least 2" in capsys.readouterr().err
    assert main(["audit", "missing", "--storage", sqlite_url]) == 1
    assert "no study named 'missing'" in capsys.readouterr().err
    with session_scope(sqlite_url) as session:  # a space stored by a release whose spaces this one rejects
        session.get(Study, get_study_row(sqlite_url, "lonely").id).spec = "name: lonely\nfamily: gone\n"
    assert main(["audit", "lonely", "--storage", sqlite_url, "--no-progress"]) == 1
    assert "the stored space of 'lonely' is no longer valid" in capsys.readouterr().err


def test_audit__resumed_after_a_lost_trial_retrains_it_and_every_planned_one(parent_url):
    plan, audit_space = plan_audit(parent_url, "parent", top=3, random_count=0, factor=2)
    with session_scope(parent_url) as session:
        name = add_audit_row(session, get_study_row(parent_url, "parent"), plan, audit_space, status="running").name
    # A runner died while training the first planned trial: its trial is left RUNNING.
    dead = optuna.create_study(study_name=name, storage=optuna_storage(parent_url)).ask()
    dead.set_user_attr("parent_trial", plan.trials[0])

    outcome = run_audit(parent_url, name, plan, audit_space, progress=False, create_row=False)
    assert outcome.status == "succeeded"
    audit = optuna.load_study(study_name=name, storage=optuna_storage(parent_url))
    assert sorted(t.user_attrs["parent_trial"] for t in audit.get_trials(states=(TrialState.COMPLETE,))) == sorted(
        plan.trials
    )
    assert audit.trials[0].state == TrialState.FAIL and audit.trials[0].user_attrs["lost"]
    report = audit_report(parent_url, name, plan)
    assert report["finished"] == 3 and report["proxy"]["kendall_tau"] is not None
    assert report["proxy"]["top_k_overlap"] is None  # 3 rows, k = 3: any ranking has the same top 3
