"""Masked language modelling proxy for text encoders (BERT, ModernBERT)."""

from __future__ import annotations

import torch

from nas.proxies.base import Proxy
from nas.proxies.masking import mask_tokens


class MaskedLanguageModelling(Proxy):
    task = "mlm"

    def train_batch(self, generator):
        return mask_tokens(self.sample_rows(self.data.train, generator), self.hp["mask_prob"], self.shape.vocab_size, generator)

    def validation_batches(self, study_seed):
        generator = torch.Generator().manual_seed(study_seed)
        return [mask_tokens(rows, self.hp["mask_prob"], self.shape.vocab_size, generator) for rows in self.fixed_rows()]

    def loss(self, model, batch):
        return model(input_ids=batch["input_ids"], labels=batch["labels"]).loss

    def example_input(self, batch_size):
        return {"input_ids": self.data.val[:1].expand(batch_size, -1).contiguous()}
