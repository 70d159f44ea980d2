"""One contract for every registered family (timm-style, parametrised over the registry)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nas.data.prepare import PreparedData
from nas.models import FAMILIES, DataShape, get_family
from nas.proxies.registry import TASKS, get_proxy
from nas.space.sections import SEARCHABLE_HYPERPARAMETERS, ProxySpec

SHAPES = {"text": DataShape(vocab_size=99, seq_len=16), "image": DataShape(image_size=16, channels=1)}
VARIANTS = {
    "transformer": [{}, {"block": "modernbert", "local_attention": 8, "num_layers": 3}],
    "vit": [{}, {"patch_size": 2, "decoder_num_layers": 2, "mask_ratio": 0.6}],
    "cnn": [
        {},
        {"method": "simsiam"},
        {"backbone": "convnext", "depth": 2},
        {"layer_type": "bottleneck", "base_width": 16, "num_stages": 3},
    ],
}


def synthetic_data(kind: str, generator: torch.Generator) -> PreparedData:
    if kind == "text":
        ids = torch.randint(5, 99, (24, 16), generator=generator)
        ids[:, 0] = 2
        return PreparedData("text", ids[:16], ids[16:])
    images = torch.rand(24, 1, 16, 16, generator=generator) * 2 - 1
    labels = torch.arange(24) % 3
    return PreparedData("image", images[:16], images[16:], labels[:16], labels[16:])


def cases():
    for name in FAMILIES.names():
        for variant in VARIANTS.get(name, [{}]):
            yield pytest.param(name, variant, id=f"{name}-{'-'.join(f'{k}={v}' for k, v in variant.items()) or 'tiny'}")


def test_every_family_has_contract_variants():
    assert set(FAMILIES.names()) <= set(VARIANTS)


@pytest.mark.parametrize(("name", "variant"), list(cases()))
def test_family_contract(name, variant):
    family = get_family(name)
    arch = family.resolve({**family.tiny, **variant})
    task = TASKS.get(family.tasks[0])
    shape = SHAPES[task.data_kind]
    assert family.check(arch, shape) == []

    # Params: the analytic count (used by constraints before anything is built) is exact.
    model = family.build(arch, shape)
    counted = family.count_params(arch, shape)
    assert counted.total == sum(p.numel() for p in model.parameters())
    assert 0 < counted.non_embedding <= counted.total

    # Forward and backward through the task's own loss.
    data = synthetic_data(task.data_kind, torch.Generator().manual_seed(0))
    hp = {key: getattr(ProxySpec(), key) for key in SEARCHABLE_HYPERPARAMETERS} | {"batch_size": 4}
    proxy = get_proxy(task.name)(data, shape, hp, eval_batches=1)

    # FLOPs: the analytic count (used by constraints before anything is built) is what torch's counter sees on
    # the proxy's inference input, attention included (the math SDPA backend runs it as countable matmuls).
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model.eval()(**proxy.example_input(2))
    assert family.count_flops(arch, shape) == counter.get_total_flops() // 2 > 0

    batch = proxy.train_batch(torch.Generator().manual_seed(1))
    model.train()
    loss = proxy.loss(model, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)

    # Deterministic for a seed: same weights, same loss; another seed gives other weights.
    def seeded_loss(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(seed)
        rebuilt = family.build(arch, shape).eval()
        with torch.no_grad():
            return proxy.loss(rebuilt, proxy.validation_batches(0)[0]), torch.cat(
                [p.detach().flatten() for p in rebuilt.parameters()]
            )

    first, weights_a = seeded_loss(7)
    second, weights_b = seeded_loss(7)
    _, weights_c = seeded_loss(8)
    assert torch.equal(first, second) and torch.equal(weights_a, weights_b)
    assert not torch.equal(weights_a, weights_c)


@pytest.mark.parametrize("name", FAMILIES.names())
def test_family__config_is_the_transformers_config_of_the_built_model(name):
    family = get_family(name)
    arch = family.resolve(family.tiny)
    shape = SHAPES[TASKS.get(family.tasks[0]).data_kind]
    model = family.build(arch, shape)
    assert model.config.to_dict() == family.hf_config(arch, shape).to_dict()


@pytest.mark.parametrize("patch_size", [2, 4])
def test_vit__a_built_mae_knows_where_its_patches_are(patch_size):
    """Both sin-cos position tables are filled (transformers 5 leaves them at zero) and match the released MAE's."""
    from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding

    family = get_family("vit")
    model = family.build(family.resolve({**family.tiny, "patch_size": patch_size}), SHAPES["image"])
    encoder, decoder = model.vit.embeddings.position_embeddings[0], model.decoder.decoder_pos_embed[0]
    grid = 16 // patch_size
    assert encoder.shape[0] == decoder.shape[0] == grid * grid + 1
    table = build_2d_sinusoidal_position_embedding(height=grid, width=grid, embed_dim=encoder.shape[-1], cls_token=True)
    half = table.shape[-1] // 2
    assert torch.allclose(encoder, torch.cat([table[..., half:], table[..., :half]], dim=-1))
    assert len({tuple(row.tolist()) for row in encoder[1:]}) == grid * grid  # every patch position differs
    assert decoder[1:].abs().sum() > 0
