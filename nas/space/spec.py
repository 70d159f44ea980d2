"""The types of a search space and sampling from it.

A :class:`SearchSpace` is what a validated YAML file becomes (``nas.space.load`` builds it). ``suggest`` is the
define-by-run sampler over an Optuna trial; ``feasibility`` applies the family's own rules and the user's
constraints (params and FLOPs included, counted analytically) before anything is built. A :class:`Candidate` is one
sample, plain JSON data: what a trial trains and what the database keeps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

import yaml

from nas.catalog import TASKS
from nas.errors import UserError
from nas.models.base import DataShape, ParamCount, get_family
from nas.space.expressions import Expression, ExpressionError, UnboundName
from nas.space.objectives import OBJECTIVES
from nas.space.params import Param
from nas.space.sections import DataSpec, ProxySpec, ResourcesSpec, SearchSpec, full_hyperparameters

DERIVED_NAMES = ("params", "non_embedding_params", "flops", "vocab_size", "seq_len", "image_size", "channels")
# Figures a constraint may name that exist only once the model is built on the trial's own device: a limit on them
# is checked by the trial before it trains, and reaches the sampler as the trial's constraint values.
MEASURED_NAMES = ("latency_ms",)


def measured_figures(figures: dict[str, Any]) -> dict[str, float]:
    """The measured figures (MEASURED_NAMES) among a trial's reported or stored ones."""
    return {k: figures[k] for k in MEASURED_NAMES if isinstance(figures.get(k), (int, float))}


def canonical_hash(record: dict[str, Any]) -> str:
    """A hash of ``record`` that does not depend on key order or spacing (candidate keys, space fingerprints)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class SpaceError(UserError, ValueError):
    """A space file is invalid. ``errors`` holds (YAML path, message) pairs, all of them, not just the first."""

    def __init__(self, errors: list[tuple[str, str]], source: str = "<space>"):
        self.errors = errors
        self.source = source
        super().__init__("\n".join(f"{path}: {message}" for path, message in errors))

    def lines(self) -> list[str]:
        return [f"{self.source}: invalid space", *(f"  {path}: {message}" for path, message in self.errors)]


@dataclass(frozen=True)
class Candidate:
    """One sampled architecture: what a trial trains and what the database keeps (plain JSON data).

    Like nanoGPT's ``model_args`` or transformers' config.json, the record holds all a model is built from: the
    family, its architecture config and the data shape, so ``build`` needs neither the space YAML nor its data.
    (Trials stored before the family and data shape were recorded have neither; readers then use the space.)
    """

    architecture: dict[str, Any]
    hyperparameters: dict[str, Any]
    params: ParamCount
    family: str = ""
    data_shape: DataShape | None = None
    flops: int = 0  # forward FLOPs per sample, counted analytically (0 in records stored before it was)

    def to_json(self) -> dict[str, Any]:
        record = {
            "architecture": self.architecture,
            "hyperparameters": self.hyperparameters,
            "params": self.params.total,
            "non_embedding_params": self.params.non_embedding,
            "flops": self.flops,
        }
        if self.family and self.data_shape is not None:
            record.update(family=self.family, data_shape=dataclasses.asdict(self.data_shape))
        return record

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Candidate:
        """The inverse of ``to_json`` (a trial's stored record, a Ray trial's config)."""
        shape = data.get("data_shape")
        return cls(
            data["architecture"],
            data["hyperparameters"],
            ParamCount(data["params"], data["non_embedding_params"]),
            data.get("family", ""),
            DataShape(**shape) if shape else None,
            data.get("flops", 0),
        )

    @property
    def key(self) -> str:
        """A canonical hash of what a trial trains (architecture, hyperparameters, family, data shape): two samples
        with equal keys would train the same model the same way, so a study trains one of them."""
        record = {
            k: v for k, v in self.to_json().items() if k in ("architecture", "hyperparameters", "family", "data_shape")
        }
        return canonical_hash(record)

    def build(self) -> Any:
        """The model, built from the record alone (a fresh initialisation at the current torch seed)."""
        if not self.family or self.data_shape is None:
            raise ValueError("this candidate's record has no family and data shape; build it through its space")
        return get_family(self.family).build(self.architecture, self.data_shape)


@dataclass(frozen=True)
class Constraint:
    path: str
    expression: Expression

    @property
    def measured(self) -> bool:
        """Whether it names a figure measured on the trial's device (decided there, not before launch)."""
        return bool(self.expression.names & set(MEASURED_NAMES))


@dataclass(frozen=True)
class SearchSpace:
    name: str
    family: str
    task: str
    data: DataSpec
    architecture: dict[str, Param] = field(hash=False)
    hyperparameters: dict[str, Param] = field(hash=False)
    constraints: tuple[Constraint, ...]
    proxy: ProxySpec
    objectives: tuple[str, ...]
    search: SearchSpec
    resources: ResourcesSpec
    raw: dict[str, Any] = field(hash=False, repr=False)
    description: str = ""

    # --- derived facts ---------------------------------------------------------------------------
    @property
    def data_shape(self) -> DataShape:
        if TASKS.get(self.task).data_kind == "text":
            return DataShape(vocab_size=self.data.vocab_size, seq_len=self.data.seq_len)
        channels = self.data.channels or (1 if self.data.source == "builtin:digits" else 3)
        return DataShape(image_size=self.data.image_size, channels=channels)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def evals_per_trial(self) -> int:
        return math.ceil(self.proxy.steps / self.proxy.eval_every)

    def size(self) -> float:
        """Number of distinct configurations (``inf`` when any range is continuous)."""
        return math.prod(p.size() for p in [*self.architecture.values(), *self.hyperparameters.values()])

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.raw, sort_keys=False)

    def trial_terms(self) -> dict[str, Any]:
        """What decides the result of a trial of this space, flat (``proxy.steps``, ``architecture.num_layers``):
        the family, task, data, architecture and hyperparameter ranges, proxy and objectives. Not the name, the
        constraints (re-applied to each trial), the search settings or the resources."""
        terms: dict[str, Any] = {"family": self.family, "task": self.task, "objectives": list(self.objectives)}
        for section, values in (("data", self.data), ("proxy", self.proxy)):
            terms.update({f"{section}.{k}": v for k, v in dataclasses.asdict(values).items()})
        for section, params in (("architecture", self.architecture), ("hyperparameters", self.hyperparameters)):
            terms.update({f"{section}.{k}": repr(p) for k, p in params.items()})
        return terms

    @property
    def fingerprint(self) -> str:
        """A hash of ``trial_terms``: two spaces with equal fingerprints give a candidate the same result, so a
        study may reuse the other's finished trials (``search.warm_start``)."""
        return canonical_hash(self.trial_terms())

    def differences(self, other: SearchSpace) -> list[str]:
        """The trial terms in which ``other`` differs from this space, each as ``key: this vs other``."""
        mine, theirs = self.trial_terms(), other.trial_terms()
        return [
            f"{key}: {mine.get(key, '(absent)')} vs {theirs.get(key, '(absent)')}"
            for key in sorted(mine.keys() | theirs.keys())
            if mine.get(key) != theirs.get(key)
        ]

    # --- sampling --------------------------------------------------------------------------------
    def suggest(self, trial: Any) -> Candidate:
        """Define-by-run: ask ``trial`` (an Optuna trial) for every parameter, flat ``a/b/c`` names."""
        arch_values: dict[str, Any] = {}
        for key, param in self.architecture.items():
            param.suggest(trial, key, key, arch_values)
        hp_values: dict[str, Any] = {}
        for key, param in self.hyperparameters.items():
            param.suggest(trial, key, key, hp_values)
        return self.candidate(arch_values, hp_values)

    def sample_random(self, rng: random.Random) -> Candidate:
        arch_values: dict[str, Any] = {}
        for key, param in self.architecture.items():
            param.sample_random(rng, key, arch_values)
        hp_values: dict[str, Any] = {}
        for key, param in self.hyperparameters.items():
            param.sample_random(rng, key, hp_values)
        return self.candidate(arch_values, hp_values)

    def candidate(self, arch_values: dict[str, Any], hp_values: dict[str, Any]) -> Candidate:
        family = get_family(self.family)
        architecture = family.resolve(arch_values)
        buildable = not family.check(architecture, self.data_shape)
        return Candidate(
            architecture,
            full_hyperparameters(self.proxy, hp_values),
            family.count_params(architecture, self.data_shape),
            self.family,
            self.data_shape,
            family.count_flops(architecture, self.data_shape) if buildable else 0,
        )

    def feasibility(self, candidate: Candidate) -> list[tuple[str, str]]:
        """Every rule this candidate breaks that can be decided before launch, as (YAML path, message); empty when
        it may be trained (limits on measured figures are checked by the trial: ``measured_problems``)."""
        family = get_family(self.family)
        problems = [
            (f"architecture.{key}", message) for key, message in family.check(candidate.architecture, self.data_shape)
        ]
        if problems:
            return problems  # the analytic count is meaningless for an unbuildable shape
        return self._broken(candidate, [c for c in self.constraints if not c.measured], {})

    def measured_problems(self, candidate: Candidate, measured: dict[str, float]) -> list[tuple[str, str]]:
        """The limits on measured figures (``latency_ms``) that ``measured`` breaks, as (YAML path, message)."""
        return self._broken(candidate, [c for c in self.constraints if c.measured], measured)

    def constraint_values(self, candidate: Candidate, measured: dict[str, float]) -> list[float]:
        """One value per constraint in Optuna's convention (<= 0 satisfied), what constrained samplers learn from.
        A limit on a figure not measured (a sample rejected before launch) counts as satisfied."""
        env = {**self.constraint_env(candidate), **measured}
        values = []
        for constraint in self.constraints:
            try:
                values.append(constraint.expression.violation(env))
            except UnboundName:
                values.append(0.0)
            except (ArithmeticError, TypeError, ValueError, ExpressionError):
                values.append(1.0)
        return values

    def _broken(
        self, candidate: Candidate, constraints: list[Constraint], measured: dict[str, float]
    ) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        env = {**self.constraint_env(candidate), **measured}
        for constraint in constraints:
            try:
                satisfied = bool(constraint.expression(env))
            except UnboundName as exc:  # defensive: validation rejects unknown names up front
                problems.append((constraint.path, f"name {exc.args[0]!r} has no value in this sample"))
                continue
            except (ArithmeticError, TypeError, ValueError, ExpressionError) as exc:
                problems.append((constraint.path, f"cannot evaluate {constraint.expression.text!r}: {exc}"))
                continue
            if not satisfied:
                figures = ", ".join(f"{k} = {v:.4g}" for k, v in measured.items() if k in constraint.expression.names)
                problems.append(
                    (constraint.path, f"violated: {constraint.expression.text}" + (f" ({figures})" if figures else ""))
                )
        return problems

    def constraint_env(self, candidate: Candidate) -> dict[str, Any]:
        shape = self.data_shape
        return {
            **candidate.architecture,
            **candidate.hyperparameters,
            "params": candidate.params.total,
            "non_embedding_params": candidate.params.non_embedding,
            "flops": candidate.flops,
            "vocab_size": shape.vocab_size,
            "seq_len": shape.seq_len,
            "image_size": shape.image_size,
            "channels": shape.channels,
        }
