"""Load and validate a search space file: YAML in, a frozen :class:`SearchSpace` out, or a :class:`SpaceError`
listing every problem with its YAML path (not just the first)."""

from __future__ import annotations

import copy
import random
from collections import Counter
from pathlib import Path
from typing import Any, cast

import yaml

from nas.catalog import SAMPLERS, SCHEDULERS, TASKS, resolve_source
from nas.models import FAMILIES
from nas.models.base import ArchKey, get_family
from nas.space.expressions import Expression, ExpressionError
from nas.space.objectives import LOSS_OBJECTIVES, OBJECTIVES
from nas.space.params import Fixed, FloatRange, IntRange, Param, parse_param
from nas.space.sections import (
    HYPERPARAMETER_MINIMUMS,
    SEARCHABLE_HYPERPARAMETERS,
    DataSpec,
    ProxySpec,
    ResourcesSpec,
    SearchSpec,
    check_ranges,
    parse_section,
)
from nas.space.spec import DERIVED_NAMES, MEASURED_NAMES, Constraint, SearchSpace, SpaceError

TOP_LEVEL_KEYS = (
    "name",
    "description",
    "family",
    "task",
    "data",
    "architecture",
    "hyperparameters",
    "constraints",
    "proxy",
    "objectives",
    "search",
    "resources_per_trial",
)
# A searched hyperparameter is checked like an architecture key: its type and default are the ProxySpec field's.
HYPERPARAMETER_KEYS = {
    name: ArchKey(type(getattr(ProxySpec, name)), getattr(ProxySpec, name), minimum=minimum)
    for name, minimum in HYPERPARAMETER_MINIMUMS.items()
}
FEASIBILITY_DRAWS = 2000
# A space is a page of YAML. Far larger or deeper input is a mistake or an attack: PyYAML composes nested nodes
# recursively (thousands of "[" end in a RecursionError), and aliases can expand a small file into a huge document.
MAX_SPACE_BYTES = 1 << 20
MAX_YAML_DEPTH = 32


class _SpaceLoader(yaml.SafeLoader):
    """SafeLoader that refuses nesting deeper than MAX_YAML_DEPTH and anchors/aliases, as a YAML error at the spot."""

    depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a space file; write the values out", event.start_mark
            )
        if self.depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", event.start_mark
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load_space(
    source: str | Path,
    overrides: list[str] | dict[str, Any] | None = None,
    check_data: bool = True,
    data_roots: tuple[Path, ...] | None = None,
) -> SearchSpace:
    """Parse a space from a file path or YAML text, apply ``key.path=value`` overrides, validate everything."""
    text, label = _read(source)
    return load_space_text(text, overrides, label, check_data, data_roots)


def load_space_text(
    text: str,
    overrides: list[str] | dict[str, Any] | None = None,
    label: str = "<text>",
    check_data: bool = True,
    data_roots: tuple[Path, ...] | None = None,
) -> SearchSpace:
    """Like ``load_space`` for YAML text that must never be taken for a file path (API submissions)."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_SPACE_BYTES:
        raise SpaceError([("<yaml>", f"{size:,} bytes is over the {MAX_SPACE_BYTES:,} a space may have")], label)
    try:
        raw = yaml.load(text, Loader=_SpaceLoader)  # a SafeLoader with limits
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpaceError([("<yaml>", f"not valid YAML{where}: {problem}")], label) from None
    if not isinstance(raw, dict):
        raise SpaceError([("<root>", f"a space must be a YAML mapping, got {type(raw).__name__}")], label)
    raw = apply_overrides(raw, overrides or [], label)
    return parse_space(raw, label, check_data=check_data, data_roots=data_roots)


def _read(source: str | Path) -> tuple[str, str]:
    if isinstance(source, Path) or ("\n" not in str(source) and str(source).endswith((".yaml", ".yml"))):
        path = Path(source)
        if not path.is_file():
            raise SpaceError([("<file>", f"no such file: {path}")], str(path))
        if (size := path.stat().st_size) > MAX_SPACE_BYTES:
            raise SpaceError(
                [("<file>", f"{path} is {size:,} bytes, over the {MAX_SPACE_BYTES:,} a space may have")], str(path)
            )
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise SpaceError([("<file>", f"cannot read {path}: {exc}")], str(path)) from None
    return str(source), "<text>"


def apply_overrides(
    raw: dict[str, Any], overrides: list[str] | dict[str, Any], label: str = "<space>"
) -> dict[str, Any]:
    """``search.trials=4`` style overrides; values are parsed as YAML (``{int: [2, 4]}`` works)."""
    raw = copy.deepcopy(raw)
    items: list[tuple[str, Any]] = []
    errors: list[tuple[str, str]] = []
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        for text in overrides:
            key, sep, value = text.partition("=")
            if not sep or not key.strip():
                errors.append(("--set", f"{text!r} is not of the form key.path=value"))
                continue
            try:
                items.append((key.strip(), yaml.safe_load(value)))
            except yaml.YAMLError:
                errors.append((key.strip(), f"value {value!r} is not valid YAML"))
    for key, value in items:
        parts = key.split(".")
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                errors.append((".".join(parts[: depth + 1]), "is not a mapping, so it has no keys to set"))
                break
            node = child
        else:
            node[parts[-1]] = value
    if errors:
        raise SpaceError(errors, label)
    return raw


def parse_space(
    raw: dict[str, Any],
    label: str = "<space>",
    check_data: bool = True,
    check_satisfiable: bool = True,
    data_roots: tuple[Path, ...] | None = None,
) -> SearchSpace:
    """Validate ``raw`` into a SearchSpace (SpaceError lists every problem). ``check_data`` resolves data.source
    (within ``data_roots`` where given: a service's NAS_DATA_ROOTS)."""
    errors: list[tuple[str, str]] = []
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            errors.append((str(key), f"unknown key; expected one of {', '.join(TOP_LEVEL_KEYS)}"))

    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        errors.append(("name", "a non-empty name is required"))
    family_name, task = raw.get("family"), raw.get("task")
    family = None

    if family_name not in FAMILIES:
        errors.append(("family", f"unknown family {family_name!r}; known: {', '.join(FAMILIES.names())}"))
    else:
        family = get_family(cast(str, family_name))  # registered names are str
    if task not in TASKS:
        errors.append(("task", f"unknown task {task!r}; known: {', '.join(TASKS.names())}"))
    elif family is not None and task not in family.tasks:
        errors.append(("task", f"family {family_name!r} supports {', '.join(family.tasks)}, not {task!r}"))

    data = parse_section(DataSpec, raw.get("data"), "data", errors)
    proxy = parse_section(ProxySpec, raw.get("proxy"), "proxy", errors)
    search = parse_section(SearchSpec, raw.get("search"), "search", errors)
    resources = parse_section(ResourcesSpec, raw.get("resources_per_trial"), "resources_per_trial", errors)
    check_ranges(data, proxy, search, resources, errors)
    if data and task in TASKS:
        try:
            kind = resolve_source(data.source, data_roots).kind if check_data else None
        except ValueError as exc:
            errors.append(("data.source", str(exc)))
        else:
            needed = TASKS.get(cast(str, task)).data_kind  # registered names are str
            if kind and kind != needed:
                errors.append(("data.source", f"task {task!r} needs {needed} data, {data.source!r} is {kind} data"))

    architecture = _parse_params(raw.get("architecture"), "architecture", errors, required=True)
    hyperparameters = _parse_params(raw.get("hyperparameters"), "hyperparameters", errors, required=False)
    if family is not None:
        _check_keys(family.arch_keys, architecture, "architecture", f"family {family.name!r}", errors)
    _check_keys(HYPERPARAMETER_KEYS, hyperparameters, "hyperparameters", "hyperparameters", errors)
    objectives = _parse_objectives(raw.get("objectives", ["val_loss"]), errors)
    if family is not None and set(LOSS_OBJECTIVES) & set(objectives):
        for key in family.loss_defining_keys:
            searched = [
                k
                for top, p in architecture.items()
                for k, sub in p.keys(top)
                if k == key and not isinstance(sub, Fixed)
            ]
            if searched:
                errors.append(
                    (
                        f"architecture.{key}",
                        f"searching {key} makes the loss incomparable between trials "
                        "(each option trains a different loss); fix it, or rank by knn_accuracy alone",
                    )
                )
    for key in architecture.keys() & hyperparameters.keys():
        errors.append((f"hyperparameters.{key}", "is also an architecture key"))

    known_names = (
        set(DERIVED_NAMES)
        | set(MEASURED_NAMES)
        | set(SEARCHABLE_HYPERPARAMETERS)
        | (set(family.arch_keys) if family else set())
    )
    constraints = _parse_constraints(raw.get("constraints"), known_names, errors)
    if search:
        if search.sampler not in SAMPLERS:
            errors.append(
                ("search.sampler", f"unknown sampler {search.sampler!r}; known: {', '.join(SAMPLERS.names())}")
            )
        elif len(objectives) > 1 and not SAMPLERS.get(search.sampler).multi_objective:
            errors.append(("search.sampler", f"{search.sampler} cannot optimise several objectives"))
        if search.scheduler not in SCHEDULERS:
            errors.append(
                ("search.scheduler", f"unknown scheduler {search.scheduler!r}; known: {', '.join(SCHEDULERS.names())}")
            )
        elif search.scheduler != "none" and objectives and objectives[0] not in LOSS_OBJECTIVES:
            errors.append(
                (
                    "objectives",
                    "early-stopping schedulers rank trials by the first objective, so it must be "
                    f"one of {', '.join(LOSS_OBJECTIVES)} (or set search.scheduler: none)",
                )
            )
    if proxy and "predicted_loss" in objectives and proxy.predict == "none":
        errors.append(("objectives", "predicted_loss needs a learning-curve predictor: set proxy.predict: power_law"))
    if raw.get("description") is not None and not isinstance(raw.get("description"), str):
        errors.append(("description", "must be text"))
    if errors:
        raise SpaceError(errors, label)
    # No errors: name, family and task passed their checks above and every section parsed.
    assert isinstance(name, str) and isinstance(family_name, str) and isinstance(task, str)
    assert data is not None and proxy is not None and search is not None and resources is not None

    space = SearchSpace(
        name=name.strip(),
        family=family_name,
        task=task,
        data=data,
        architecture=architecture,
        hyperparameters=hyperparameters,
        constraints=constraints,
        proxy=proxy,
        objectives=objectives,
        search=search,
        resources=resources,
        raw=raw,
        description=raw.get("description") or "",
    )
    if check_satisfiable:
        _check_satisfiable(space, label)
    return space


def _parse_params(node: Any, path: str, errors: list[tuple[str, str]], required: bool) -> dict[str, Param]:
    if node is None:
        if required:
            errors.append((path, "is required: the architecture keys to search or fix"))
        return {}
    if not isinstance(node, dict):
        errors.append((path, f"expected a mapping, got {type(node).__name__}"))
        return {}
    params = {}
    for key, value in node.items():
        param = parse_param(value, f"{path}.{key}", errors)
        if param is not None:
            params[str(key)] = param
    return params


def _check_keys(
    specs: dict[str, ArchKey], params: dict[str, Param], section: str, owner: str, errors: list[tuple[str, str]]
) -> None:
    """Every key known, every value (or range bound) of the right type and in range, required keys present."""
    seen: Counter[str] = Counter()
    for top_key, top_param in params.items():
        for key, param in top_param.keys(top_key):
            seen[key] += 1
            spec = specs.get(key)
            if spec is None:
                errors.append((f"{section}.{key}", f"unknown key for {owner}; known: {', '.join(specs)}"))
                continue
            # Ranges are checked at their bounds (an int range may be huge); choices value by value.
            if isinstance(param, (IntRange, FloatRange)):
                values: list[Any] = [param.low, param.high]
            else:
                discrete = param.values()
                assert discrete is not None  # only FloatRange (handled above) is continuous
                values = discrete
            for value in values:
                problem = spec.problem(value)
                if problem:
                    errors.append((f"{section}.{key}", problem))
                    break
    for key, count in seen.items():
        if count > 1 and key in params:
            errors.append((f"{section}.{key}", "is set both at the top level and inside a conditional branch"))
    for key in [k for k, spec in specs.items() if spec.default is None and k not in seen]:
        errors.append((f"{section}.{key}", f"is required for {owner}"))


def _parse_constraints(node: Any, known: set[str], errors: list[tuple[str, str]]) -> tuple[Constraint, ...]:
    if node is None:
        return ()
    if not isinstance(node, list):
        errors.append(("constraints", "expected a list of expressions"))
        return ()
    constraints = []
    for index, text in enumerate(node):
        path = f"constraints[{index}]"
        try:
            expression = Expression(text)
        except ExpressionError as exc:
            errors.append((path, str(exc)))
            continue
        unknown = sorted(expression.names - known)
        if unknown:
            errors.append(
                (path, f"unknown name {unknown[0]!r} in {expression.text!r}; known: {', '.join(sorted(known))}")
            )
            continue
        constraints.append(Constraint(path, expression))
    return tuple(constraints)


def _parse_objectives(node: Any, errors: list[tuple[str, str]]) -> tuple[str, ...]:
    if isinstance(node, str):
        node = [node]
    if not isinstance(node, list) or not node:
        errors.append(("objectives", "expected a non-empty list, e.g. [val_loss] or [val_loss, params]"))
        return ()
    for index, name in enumerate(node):
        if name not in OBJECTIVES:
            errors.append((f"objectives[{index}]", f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}"))
    if len(set(node)) != len(node):
        errors.append(("objectives", "objectives must be distinct"))
    return tuple(node)


def _check_satisfiable(space: SearchSpace, label: str) -> None:
    """Reject a space no sample of which can be trained: random draws, counting which rule fails most."""
    rng = random.Random(0)
    draws = 1 if space.size() == 1 else FEASIBILITY_DRAWS
    violations: Counter[tuple[str, str]] = Counter()
    for _ in range(draws):
        problems = space.feasibility(space.sample_random(rng))
        if not problems:
            return
        violations.update(problems)
    if draws == 1:
        raise SpaceError(sorted(violations), label)
    (path, message), count = violations.most_common(1)[0]
    raise SpaceError(
        [
            (
                path,
                f"no sample among {draws} random draws satisfies the space; most often: {message} "
                f"({count} of {draws} draws)",
            )
        ],
        label,
    )
