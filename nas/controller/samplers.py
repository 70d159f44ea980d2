"""Optuna samplers and Ray Tune schedulers by the names the YAML uses (imports happen on use)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nas.registry import Registry

SAMPLERS: Registry[Callable[..., Any]] = Registry("sampler")
SCHEDULERS: Registry[Callable[..., Any]] = Registry("scheduler")
MULTI_OBJECTIVE_SAMPLERS = {"tpe", "random", "nsga2", "gp"}


@SAMPLERS.register("tpe")
def _tpe(seed: int, multi_objective: bool):
    import optuna

    # multivariate + group: conditional branches get their own joint models instead of independent ones.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=4)


@SAMPLERS.register("random")
def _random(seed: int, multi_objective: bool):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@SAMPLERS.register("gp")
def _gp(seed: int, multi_objective: bool):
    import optuna

    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=4)


@SAMPLERS.register("nsga2")
def _nsga2(seed: int, multi_objective: bool):
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)


@SCHEDULERS.register("none")
def _fifo(max_t: int, grace_period: int, reduction_factor: int):
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


@SCHEDULERS.register("asha")
def _asha(max_t: int, grace_period: int, reduction_factor: int):
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=min(grace_period, max_t),
                         reduction_factor=reduction_factor)


@SCHEDULERS.register("hyperband")
def _hyperband(max_t: int, grace_period: int, reduction_factor: int):
    """Asynchronous HyperBand (Li et al., 2020): ASHA over several brackets of growing grace periods.

    Ray's synchronous ``HyperBandScheduler`` pauses trials and resumes them from checkpoints; a proxy run is
    too short to be worth checkpointing, so the asynchronous form, which never pauses, is the one we use.
    """
    from ray.tune.schedulers import ASHAScheduler

    grace = min(grace_period, max_t)
    brackets = 1
    while grace * reduction_factor**brackets <= max_t and brackets < 4:
        brackets += 1
    return ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=grace,
                         reduction_factor=reduction_factor, brackets=brackets)


def create_sampler(name: str, seed: int, multi_objective: bool):
    return SAMPLERS.get(name)(seed, multi_objective)


def create_scheduler(name: str, max_t: int, grace_period: int, reduction_factor: int):
    return SCHEDULERS.get(name)(max_t, grace_period, reduction_factor)
