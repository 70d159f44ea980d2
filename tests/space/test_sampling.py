from __future__ import annotations

import json
import random

import optuna

from nas.models import get_family
from nas.space import Candidate, load_space
from nas.space.sections import SEARCHABLE_HYPERPARAMETERS
from tests.conftest import SPACES


def test_suggest__uses_flat_names_and_opens_conditional_branches():
    space = load_space(
        SPACES / "text-mlm-tiny.yaml",
        ["architecture.block={modernbert: {local_attention: {choice: [16, 32]}}, bert: null}"],
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen_blocks = set()
    for _ in range(12):
        trial = study.ask()
        candidate = space.suggest(trial)
        seen_blocks.add(candidate.architecture["block"])
        if candidate.architecture["block"] == "modernbert":
            assert "block/modernbert/local_attention" in trial.params
            assert candidate.architecture["local_attention"] == trial.params["block/modernbert/local_attention"]
        else:
            assert not any(name.startswith("block/modernbert") for name in trial.params)
        json.dumps(candidate.to_json())  # plain data: rebuildable from the database alone
        study.tell(trial, 1.0)
    assert seen_blocks == {"bert", "modernbert"}


def test_feasibility__applies_family_rules_and_user_constraints():
    space = load_space(
        SPACES / "text-mlm-tiny.yaml", ["architecture.num_heads={choice: [2, 4, 5]}", "constraints=[params <= 150_000]"]
    )
    rng = random.Random(0)
    outcomes = [space.feasibility(space.sample_random(rng)) for _ in range(200)]
    messages = {message for problems in outcomes for _, message in problems}
    assert any(not problems for problems in outcomes)
    assert any("does not divide" in m for m in messages)
    assert any(m == "violated: params <= 150_000" for m in messages)


def test_feasibility__decides_flops_before_launch_and_leaves_latency_to_the_trial():
    space = load_space(
        SPACES / "text-mlm-tiny.yaml",
        ["architecture.num_heads=2", "constraints=[flops <= 20_000_000, latency_ms <= 5]"],
    )
    rng = random.Random(0)
    candidates = [space.sample_random(rng) for _ in range(100)]
    family = get_family(space.family)
    assert all(c.flops == family.count_flops(c.architecture, space.data_shape) > 0 for c in candidates)
    small = [c for c in candidates if c.flops <= 20_000_000]
    large = [c for c in candidates if c.flops > 20_000_000]
    assert small and large
    assert all(space.feasibility(c) == [] for c in small)  # latency is not known yet: not a reason to reject
    assert all(space.feasibility(c) == [("constraints[0]", "violated: flops <= 20_000_000")] for c in large)
    # The trial measures latency on its own device and checks the rest of the limits itself.
    assert space.measured_problems(small[0], {"latency_ms": 4.0}) == []
    assert space.measured_problems(small[0], {"latency_ms": 7.5}) == [
        ("constraints[1]", "violated: latency_ms <= 5 (latency_ms = 7.5)")
    ]
    flops_value, latency_value = space.constraint_values(large[0], {"latency_ms": 7.5})
    assert flops_value > 0 and latency_value > 0
    assert space.constraint_values(small[0], {})[1] == 0.0  # not measured (rejected before launch): no verdict


def test_candidate__carries_defaults_so_the_config_is_complete():
    space = load_space(SPACES / "vit-mae-tiny.yaml")
    candidate = space.sample_random(random.Random(1))
    assert candidate.architecture["decoder_ffn_ratio"] == 4.0  # family default
    assert candidate.hyperparameters["batch_size"] == space.proxy.batch_size


def test_candidate__survives_its_json_record_unchanged():
    """A trial stores ``to_json``; a Ray worker, an audit and an export rebuild the candidate with ``from_json``."""
    space = load_space(SPACES / "text-mlm-tiny.yaml")
    candidate = space.sample_random(random.Random(3))
    record = json.loads(json.dumps(candidate.to_json()))  # through the database's JSON text
    assert Candidate.from_json(record) == candidate
    # The record alone rebuilds the model: no space, no data (nanoGPT's model_args, transformers' config.json).
    model = Candidate.from_json(record).build()
    assert sum(p.numel() for p in model.parameters()) == record["params"]
    assert set(candidate.hyperparameters) == set(SEARCHABLE_HYPERPARAMETERS)
    assert isinstance(candidate.hyperparameters["batch_size"], int) and isinstance(
        candidate.hyperparameters["lr"], float
    )


def test_fingerprint__changes_with_what_decides_a_result_and_not_with_the_search_around_it():
    """Warm starts compare fingerprints: a name, the search settings, resources or constraints leave it as it is;
    the proxy, the data or a range of the space change it, and ``differences`` names what changed."""
    base = load_space(SPACES / "text-mlm-tiny.yaml")
    same = [
        "name=renamed",
        "search.trials=99",
        "search.sampler=random",
        "resources_per_trial.cpu=2",
        "constraints=[params <= 500_000]",
    ]
    for override in same:
        assert load_space(SPACES / "text-mlm-tiny.yaml", [override]).fingerprint == base.fingerprint, override
    changed = {
        "proxy.lr=1.0e-3": "proxy.lr: 0.003 vs 0.001",
        "data.seq_len=32": "data.seq_len: 64 vs 32",
        "architecture.num_layers={int: [1, 4]}": "architecture.num_layers",
        "objectives=[val_loss, params]": "objectives",
    }
    for override, named in changed.items():
        other = load_space(SPACES / "text-mlm-tiny.yaml", [override])
        assert other.fingerprint != base.fingerprint, override
        assert len(base.differences(other)) == 1 and base.differences(other)[0].startswith(named), override
