from __future__ import annotations

import dataclasses
import math
import random

import pytest
import torch

from nas.data.prepare import prepare_data
from nas.models import get_family
from nas.proxies.loop import TrialFailure, build_proxy, hidden_lr_scale, lr_factor, make_optimizer, run_proxy
from nas.proxies.zero_cost import zero_cost_scores
from nas.space import load_space
from tests.conftest import COST_METRICS, ONE_BERT_SHAPE, SPACES


def tiny_text_space(*extra):
    return load_space(
        SPACES / "text-mlm-tiny.yaml",
        [
            *ONE_BERT_SHAPE,
            "proxy.steps=6",
            "proxy.eval_every=3",
            "data.max_samples=200",
            "data.vocab_size=256",
            *extra,
        ],
    )


def fixed_candidate(space, **hyperparameters):
    """The space fixes every architecture key, so any draw is the same candidate."""
    candidate = space.sample_random(random.Random(0))
    return dataclasses.replace(candidate, hyperparameters={**candidate.hyperparameters, **hyperparameters})


def test_run_proxy__reports_every_eval_and_records_all_metrics():
    space = tiny_text_space()
    data = prepare_data(space.data, "text", 0)
    reports = []
    candidate = fixed_candidate(space)
    final = run_proxy(space, candidate, data, lambda metrics, model=None: reports.append(metrics), seed=0)
    assert [r["step"] for r in reports] == [3, 6]
    assert [r["completed"] for r in reports] == [False, True]
    for key in ("val_loss", *COST_METRICS):
        assert final[key] > 0, key
    built = get_family("transformer").build(candidate.architecture, space.data_shape)
    assert final["params"] == sum(p.numel() for p in built.parameters())


def test_run_proxy__a_diverging_loss_fails_the_trial_with_its_reason():
    space = tiny_text_space()
    data = prepare_data(space.data, "text", 0)
    candidate = fixed_candidate(space, lr=1e30)  # the first step blows the weights up
    with pytest.raises(TrialFailure, match=r"loss became (nan|inf) at step 2"):
        run_proxy(space, candidate, data, lambda metrics, model=None: None, seed=0)


def test_validation_batches__are_identical_for_every_trial_of_a_study():
    space = tiny_text_space()
    data = prepare_data(space.data, "text", 0)
    first = build_proxy(space, data, fixed_candidate(space)).validation_batches(0)
    second = build_proxy(space, data, fixed_candidate(space, lr=0.1)).validation_batches(0)
    assert all(
        torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
        for a, b in zip(first, second)
    )
    assert (first[0]["labels"] != -100).any()


def test_lr_schedule__warms_up_then_decays_to_the_floor():
    factors = [lr_factor(step, 100, 0.1, 0.1) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and max(factors) == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.1, abs=0.01) and factors[50] > factors[90]


def test_lr_schedule__constant_warms_up_like_cosine_then_ends_at_the_peak_rate():
    constant = [lr_factor(step, 100, 0.1, 0.1, "constant") for step in range(100)]
    cosine = [lr_factor(step, 100, 0.1, 0.1, "cosine") for step in range(100)]
    assert constant[:10] == cosine[:10] and constant[0] == pytest.approx(0.1)
    assert constant[10:] == [1.0] * 90 and cosine[-1] < 0.2


def test_width_rule__scales_hidden_matrices_only():
    space = tiny_text_space("proxy.lr_scaling=width", "proxy.lr_base_width=64")
    candidate = fixed_candidate(space)
    model = get_family("transformer").build(candidate.architecture, space.data_shape)
    optimizer = make_optimizer(model, 1e-3, 0.01, hidden_lr_scale(space, candidate.architecture))
    scales = {group["lr_scale"]: group for group in optimizer.param_groups}
    assert set(scales) == {2.0, 1.0}  # hidden 32 trains at 64/32 the rate; embeddings and vectors at 1x
    assert scales[2.0]["lr"] == pytest.approx(2e-3)
    embedding = model.bert.embeddings.word_embeddings.weight
    assert all(p is not embedding for p in scales[2.0]["params"])
    assert all(p.ndim >= 2 for p in scales[2.0]["params"])


def test_zero_cost_scores__are_finite_and_leave_the_model_untouched():
    space = tiny_text_space()
    data = prepare_data(space.data, "text", 0)
    candidate = fixed_candidate(space)
    model = get_family("transformer").build(candidate.architecture, space.data_shape)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    proxy = build_proxy(space, data, candidate)
    torch.manual_seed(1234)
    rng_before = torch.get_rng_state()
    scores = zero_cost_scores(model, proxy, proxy.validation_batches(0)[0])
    assert all(math.isfinite(v) and v > 0 for v in scores.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng_before, torch.get_rng_state())  # the training run's random draws are its own
    again = zero_cost_scores(model, proxy, proxy.validation_batches(0)[0])
    assert {k: v for k, v in again.items() if k != "zero_cost_ms"} == {
        k: v for k, v in scores.items() if k != "zero_cost_ms"
    }


@pytest.mark.parametrize("block", ["bert", "modernbert"])
def test_mlm_loss__on_masked_positions_only_equals_the_full_heads_loss(block):
    space = tiny_text_space(f"architecture.block={block}")
    data = prepare_data(space.data, "text", 0)
    candidate = fixed_candidate(space)
    model = get_family("transformer").build(candidate.architecture, space.data_shape).eval()
    proxy = build_proxy(space, data, candidate)
    batch = proxy.validation_batches(0)[0]
    full = torch.nn.functional.cross_entropy(
        model(input_ids=batch["input_ids"]).logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100
    )
    assert float(proxy.loss(model, batch)) == pytest.approx(float(full), rel=1e-5)
