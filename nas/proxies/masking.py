"""Masking for masked language modelling (Devlin et al., 2019, "BERT"): 15% of tokens are chosen; of those
80% become [MASK], 10% a random token, 10% stay; special tokens are never chosen."""

from __future__ import annotations

import torch

from nas.models.transformer import MASK_ID

FIRST_ORDINARY_TOKEN = 5  # ids below are [PAD] [UNK] [CLS] [SEP] [MASK]


def mask_tokens(
    ids: torch.Tensor, mask_prob: float, vocab_size: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    inputs = ids.clone()
    labels = ids.clone()
    candidates = ids >= FIRST_ORDINARY_TOKEN
    chosen = (torch.rand(ids.shape, generator=generator) < mask_prob) & candidates
    # Guarantee at least one target per sequence so the loss is defined for every batch.
    first = candidates.float().argmax(dim=1)
    empty = ~chosen.any(dim=1) & candidates.any(dim=1)
    chosen[empty, first[empty]] = True
    labels[~chosen] = -100
    roll = torch.rand(ids.shape, generator=generator)
    inputs[chosen & (roll < 0.8)] = MASK_ID
    random_tokens = torch.randint(FIRST_ORDINARY_TOKEN, vocab_size, ids.shape, generator=generator)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = random_tokens[swap]
    return {"input_ids": inputs, "labels": labels}
