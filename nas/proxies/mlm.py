"""Masked language modelling proxy for text encoders (BERT, ModernBERT)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import BertForMaskedLM  # a proxy module is imported only to train (nas.proxies.registry)

from nas.proxies.base import Proxy
from nas.proxies.masking import mask_tokens


class MaskedLanguageModelling(Proxy):
    task = "mlm"

    def train_batch(self, generator):
        return mask_tokens(
            self.sample_rows(self.data.train, generator), self.hp["mask_prob"], self.shape.vocab_size, generator
        )

    def validation_batches(self, study_seed):
        generator = torch.Generator().manual_seed(study_seed)
        return [mask_tokens(rows, self.hp["mask_prob"], self.shape.vocab_size, generator) for rows in self.fixed_rows()]

    def loss(self, model, batch):
        if isinstance(model, BertForMaskedLM):  # not wrapped by DDP, so its parts may be called one by one
            return sparse_bert_loss(model, batch["input_ids"], batch["labels"])
        return model(input_ids=batch["input_ids"], labels=batch["labels"]).loss

    def example_input(self, batch_size):
        return {"input_ids": self.data.val[:1].expand(batch_size, -1).contiguous()}


def sparse_bert_loss(model, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BERT's MLM loss with the vocabulary projection applied to the masked positions only (~15% of them).

    The same cross-entropy as ``BertForMaskedLM(labels=...)``, at a fraction of the cost: with a small encoder
    the full (tokens x vocabulary) projection is most of the step (2-4x on CPU). ModernBERT does the same itself
    (``sparse_prediction`` in its config, set by nas.models.transformer).
    """
    hidden = model.bert(input_ids=input_ids).last_hidden_state
    chosen = labels != -100
    return F.cross_entropy(model.cls(hidden[chosen]), labels[chosen])
