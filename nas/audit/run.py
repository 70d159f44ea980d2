"""`nas audit`: retrain a finished study's best and some random architectures at longer length, and measure
how well the study's proxy ranked them.

An audit is a study of its own (a row of kind "audit" linked to its parent, and an Optuna study of the same
name), so runners claim it, the progress bar and the dashboard show it, and a dead runner's audit resumes like
any study. Its trials are fixed in advance: the parent's ``top`` best finished trials and ``random`` others
drawn with the parent's seed, each trained with its own architecture and hyperparameters at ``factor`` times
the proxy's steps (nas.audit.reference). The report compares the parent's proxy scores, and the two free
baselines (parameter count, the zero-cost score), with the long-run losses.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from nas.audit.reference import long_run_overrides
from nas.audit.stats import kendall_tau, spearman, top_k_overlap
from nas.controller.stopping import StopFlag
from nas.errors import UserError
from nas.space import SpaceError, apply_overrides, parse_space
from nas.space.objectives import LOSS_OBJECTIVES
from nas.space.spec import Candidate, SearchSpace
from nas.store.trials import ACTIVE_STATUSES, ARCHITECTURE, PARENT_TRIAL, outcome
from nas.tables import format_table

PRIMARY_ZERO_COST = "zero_cost_snip"  # the score benchmarks/proxy_fidelity.py found to rank best
MAX_NAME = 200  # the longest study name (nas.controller.run.check_study_name, the name column)


class AuditError(UserError, ValueError):
    """The study cannot be audited (the message says why)."""


@dataclass(frozen=True)
class AuditPlan:
    parent: str
    top: int
    random: int
    factor: float
    trials: list[int]  # the parent's trial numbers: the top ones first, then the random ones

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> AuditPlan:
        return cls(**json.loads(text))


def plan_audit(
    url: str, parent: str, top: int = 4, random_count: int = 4, factor: float = 10.0
) -> tuple[AuditPlan, SearchSpace]:
    """Which of ``parent``'s trials to retrain, and the space that retrains them (the parent's, at length)."""
    from optuna.trial import TrialState

    from nas.store import get_study_row

    if top < 1 or random_count < 0 or factor < 1:
        raise AuditError("--top must be at least 1, --random at least 0 and --factor at least 1")
    row = get_study_row(url, parent)
    if row.status in ACTIVE_STATUSES:
        raise AuditError(f"{parent!r} is {row.status}; audit it once it has ended")
    if row.kind != "search":
        raise AuditError(f"{parent!r} is an audit itself; audit the study it checked ({_parent_name(url, row)})")
    space = _parent_space(row)
    objective = space.objectives[0]
    if objective not in LOSS_OBJECTIVES:
        raise AuditError(
            f"{parent!r} ranks by {objective}; an audit checks a proxy loss ({', '.join(LOSS_OBJECTIVES)}) first"
        )
    study = _optuna_study(url, parent)
    complete = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if ARCHITECTURE in t.user_attrs
    ]
    if len(complete) < 2:
        raise AuditError(f"{parent!r} has {len(complete)} completed trial(s); an audit ranks at least 2")
    complete.sort(key=lambda t: (t.values[0], t.number))
    best = complete[:top]
    rest = complete[top:]
    drawn = random.Random(space.search.seed).sample(rest, min(random_count, len(rest)))
    plan = AuditPlan(
        parent, top, random_count, float(factor), [t.number for t in best] + sorted(t.number for t in drawn)
    )
    return plan, audit_space(space, plan)


def audit_space(parent_space: SearchSpace, plan: AuditPlan) -> SearchSpace:
    overrides = {
        **long_run_overrides(parent_space, plan.factor),
        "objectives": ["val_loss"],
        "search.scheduler": "none",
        "search.sampler": "random",
        "search.trials": len(plan.trials),
    }
    raw = apply_overrides(parent_space.raw, overrides)
    raw["name"] = f"{parent_space.name}-audit"
    try:
        return parse_space(raw, check_data=False, check_satisfiable=False)
    except SpaceError as error:
        raise AuditError(f"the long run of {plan.parent!r} is not a valid space: {error}") from None


def audit_name(parent: str, taken: set[str]) -> str:
    """``PARENT-audit``, then ``PARENT-audit-2`` and so on: the first name not in ``taken``, cut to the 200
    characters a study name may have (the parent's name is shortened, never the suffix)."""
    index = 1
    while True:
        suffix = "-audit" if index == 1 else f"-audit-{index}"
        name = parent[: MAX_NAME - len(suffix)] + suffix
        if name not in taken:
            return name
        index += 1


def add_audit_row(session, parent, plan: AuditPlan, space: SearchSpace, status: str = "queued"):
    """The audit's study row (kind "audit", linked to ``parent`` and owned by its owner), added to ``session``.

    One audit of a study at a time: AuditError while another is queued or running. Two callers racing past that
    check meet the unique study name on flush; the loser gets an AuditError too.
    """
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    from nas.store.models import Study
    from nas.store.studies import new_study_row

    unfinished = session.scalar(
        select(Study.name).where(Study.parent_id == parent.id, Study.status.in_(ACTIVE_STATUSES))
    )
    if unfinished is not None:
        raise AuditError(f"audit {unfinished!r} of {parent.name!r} has not ended yet")
    base = parent.name[: MAX_NAME - len("-audit-999")]
    taken = set(session.scalars(select(Study.name).where(Study.name.startswith(base, autoescape=True))))
    row = new_study_row(
        audit_name(parent.name, taken),
        space,
        status=status,
        owner=parent.owner,
        kind="audit",
        parent_id=parent.id,
        audit_plan=plan.to_json(),
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise AuditError(f"another audit of {parent.name!r} was created at the same moment; try again") from None
    return row


def run_audit(
    url: str,
    name: str,
    plan: AuditPlan,
    space: SearchSpace,
    progress: bool = True,
    create_row: bool = True,
    stop_event: StopFlag | None = None,
):
    """Retrain the plan's trials as the trials of audit study ``name``; store and return the report with the outcome."""
    from nas.controller.run import run_study

    fixed = _pending_candidates(url, name, plan)

    def store(outcome) -> None:
        outcome.report = audit_report(url, name, plan)
        _store_report(url, name, outcome.report)

    return run_study(
        space,
        name,
        url,
        progress=progress,
        create_row=create_row,
        stop_event=stop_event,
        fixed_candidates=fixed,
        before_final_status=store,
    )


def audit_report(url: str, name: str, plan: AuditPlan) -> dict[str, Any]:
    """Rank agreement between the parent's proxy and the audit's long runs, over the audited trials that finished."""
    from optuna.trial import TrialState

    parent = _parent_trials(url, plan)
    try:
        audited = _optuna_study(url, name).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    except AuditError:
        audited = []
    top = set(plan.trials[: plan.top])
    rows = []
    for trial in sorted(audited, key=lambda t: t.user_attrs[PARENT_TRIAL]):
        source = parent[trial.user_attrs[PARENT_TRIAL]]
        rows.append(
            {
                "parent_trial": source.number,
                "audit_trial": trial.number,
                "selected_as": "top" if source.number in top else "random",
                "proxy": source.values[0],
                "long_run": trial.value,
                "proxy_val_loss": source.user_attrs.get("val_loss"),
                "params": source.user_attrs.get("non_embedding_params"),
                "zero_cost": source.user_attrs.get(PRIMARY_ZERO_COST),
            }
        )
    report: dict[str, Any] = {
        "parent": plan.parent,
        "factor": plan.factor,
        "planned": len(plan.trials),
        "finished": len(rows),
        "k": plan.top,
        "trials": rows,
    }
    truth = [r["long_run"] for r in rows]
    for label, scores in (
        ("proxy", [r["proxy"] for r in rows]),
        ("params", [-r["params"] if r["params"] is not None else math.nan for r in rows]),
        ("zero_cost", [-r["zero_cost"] if r["zero_cost"] is not None else math.nan for r in rows]),
    ):
        usable = len(rows) >= 2 and all(math.isfinite(s) for s in scores)
        report[label] = {
            "kendall_tau": _finite(kendall_tau(scores, truth)) if usable else None,
            "spearman": _finite(spearman(scores, truth)) if usable else None,
            # With no more rows than k, every ranking has the same top k: the overlap would say nothing.
            "top_k_overlap": _finite(top_k_overlap(scores, truth, plan.top))
            if usable and len(rows) > plan.top
            else None,
        }
    return report


def report_table(report: dict[str, Any]) -> str:
    lines = [
        f"audit of {report['parent']}: {report['finished']} of {report['planned']} architectures retrained at "
        f"{report['factor']:g}x the proxy's steps"
    ]
    rows: list[tuple[str, ...]] = [("ranking by", "Kendall tau", "Spearman rho", f"top-{report['k']} overlap")]
    for label, title in (
        ("proxy", "the study's proxy"),
        ("params", "non-embedding params"),
        ("zero_cost", "zero-cost score"),
    ):
        rows.append((title, *(_text(report[label][key]) for key in ("kendall_tau", "spearman", "top_k_overlap"))))
    lines.append(format_table(rows, rule=True))
    return "\n".join(lines)


# --- internals -----------------------------------------------------------------------------------------


def _pending_candidates(url: str, name: str, plan: AuditPlan) -> list[tuple[Any, dict[str, Any]]]:
    """The plan's candidates not yet finished in the audit study (a resumed audit re-runs only the rest)."""

    parent = _parent_trials(url, plan)
    done: set[int] = set()
    try:
        for trial in _optuna_study(url, name).get_trials(deepcopy=False):
            ended = outcome(trial.state, trial.user_attrs) in ("complete", "failed")  # lost ones run again
            if ended and PARENT_TRIAL in trial.user_attrs:
                done.add(trial.user_attrs[PARENT_TRIAL])
    except AuditError:
        pass
    pending = []
    for number in plan.trials:
        if number in done:
            continue
        pending.append(
            (Candidate.from_json(parent[number].user_attrs), {PARENT_TRIAL: number, "parent_study": plan.parent})
        )
    return pending


def _parent_trials(url: str, plan: AuditPlan) -> dict[int, Any]:
    """The parent's planned trials by number, read one by one (the parent may hold thousands)."""
    from nas.store.db import optuna_storage

    storage = optuna_storage(url)
    try:
        study_id = storage.get_study_id_from_name(plan.parent)
    except KeyError:
        raise AuditError(f"the audited study {plan.parent!r} is gone from this database") from None
    return {
        number: storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, number))
        for number in plan.trials
    }


def _store_report(url: str, name: str, report: dict[str, Any]) -> None:
    from sqlalchemy import select

    from nas.store.db import session_scope
    from nas.store.models import Study

    with session_scope(url) as session:
        row = session.scalar(select(Study).where(Study.name == name))
        assert row is not None  # the audit's own study row is created before the audit runs
        row.audit_result = json.dumps(report)


def _optuna_study(url: str, name: str):
    import optuna

    from nas.store.db import optuna_storage

    try:
        return optuna.load_study(study_name=name, storage=optuna_storage(url))
    except KeyError:
        raise AuditError(f"no study named {name!r} has trials in this database") from None


def _parent_space(row) -> SearchSpace:
    from nas.store.studies import stored_space

    try:
        return stored_space(row)
    except SpaceError as error:  # stored by an older release whose spaces this one no longer accepts
        raise AuditError(
            f"the stored space of {row.name!r} is no longer valid, so it cannot be retrained: {error}"
        ) from None


def _parent_name(url: str, row) -> str:
    from sqlalchemy import select

    from nas.store.db import session_scope
    from nas.store.models import Study

    with session_scope(url) as session:
        return session.scalar(select(Study.name).where(Study.id == row.parent_id)) or "?"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
