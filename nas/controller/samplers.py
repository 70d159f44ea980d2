"""Optuna samplers and Ray Tune schedulers, built for the names the YAML uses (the names and their targets are in
nas.catalog; optuna and ray are imported on use)."""

from __future__ import annotations

from nas.catalog import SAMPLERS, SCHEDULERS, load_target

__all__ = ["SAMPLERS", "SCHEDULERS", "create_sampler", "create_scheduler"]


def tpe(seed: int, multi_objective: bool):
    import optuna

    # multivariate + group: conditional branches get their own joint models instead of independent ones.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=4)


def random_sampler(seed: int, multi_objective: bool):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def gp(seed: int, multi_objective: bool):
    import optuna

    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=4)


def nsga2(seed: int, multi_objective: bool):
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)


def fifo(max_t: int, grace_period: int, reduction_factor: int):
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def asha(max_t: int, grace_period: int, reduction_factor: int):
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_t,
        grace_period=min(grace_period, max_t),
        reduction_factor=reduction_factor,
    )


def hyperband(max_t: int, grace_period: int, reduction_factor: int):
    """Asynchronous HyperBand (Li et al., 2020): ASHA over several brackets of growing grace periods.

    Ray's synchronous ``HyperBandScheduler`` pauses trials and resumes them from checkpoints; a proxy run is
    too short to be worth checkpointing, so the asynchronous form, which never pauses, is the one we use.
    """
    from ray.tune.schedulers import ASHAScheduler

    grace = min(grace_period, max_t)
    brackets = 1
    while grace * reduction_factor**brackets <= max_t and brackets < 4:
        brackets += 1
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_t,
        grace_period=grace,
        reduction_factor=reduction_factor,
        brackets=brackets,
    )


def create_sampler(name: str, seed: int, multi_objective: bool):
    return load_target(SAMPLERS.get(name).target)(seed, multi_objective)


def create_scheduler(name: str, max_t: int, grace_period: int, reduction_factor: int):
    return load_target(SCHEDULERS.get(name))(max_t, grace_period, reduction_factor)
