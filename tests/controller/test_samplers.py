"""Every registered sampler drives the define-by-run space (conditional branches included) through ask/tell."""

from __future__ import annotations

import optuna
import pytest

from nas.controller.samplers import SAMPLERS, SCHEDULERS, create_sampler, create_scheduler
from nas.space import load_space
from tests.conftest import SPACES


@pytest.mark.parametrize("name", SAMPLERS.names())
@pytest.mark.parametrize("objectives", [["val_loss"], ["val_loss", "params"]])
def test_sampler__asks_feasible_candidates_from_the_space(name, objectives):
    space = load_space(SPACES / "text-mlm-tiny.yaml", [f"objectives={objectives}", f"search.sampler={name}"])
    directions = space.directions
    study = optuna.create_study(directions=directions, sampler=create_sampler(name, 0, len(directions) > 1))
    for index in range(10):
        trial = study.ask()
        candidate = space.suggest(trial)
        values = [1.0 / (1 + index), float(candidate.params.total)][: len(directions)]
        study.tell(trial, values if len(values) > 1 else values[0])
    assert len(study.trials) == 10 and all(t.state.name == "COMPLETE" for t in study.trials)


@pytest.mark.parametrize("name", SCHEDULERS.names())
def test_scheduler__is_created_for_the_proxy_length(name):
    scheduler = create_scheduler(name, max_t=8, grace_period=1, reduction_factor=2)
    assert scheduler is not None
