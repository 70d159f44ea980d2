"""Contrastive proxy for CNN backbones: two augmented views per image, SimCLR or SimSiam loss."""

from __future__ import annotations

import torch

from nas.proxies.augment import random_view
from nas.proxies.base import Proxy, unwrap
from nas.proxies.losses import nt_xent, simsiam_loss


class ContrastiveLearning(Proxy):
    task = "contrastive"

    def _views(self, rows: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {"view1": random_view(rows, generator), "view2": random_view(rows, generator)}

    def train_batch(self, generator):
        return self._views(self.sample_rows(self.data.train, generator), generator)

    def validation_batches(self, study_seed):
        generator = torch.Generator().manual_seed(study_seed)
        return [self._views(rows, generator) for rows in self.fixed_rows() if rows.shape[0] > 1]

    def loss(self, model, batch):
        _, z1, p1 = model(batch["view1"])
        _, z2, p2 = model(batch["view2"])
        if unwrap(model).method == "simsiam":
            return simsiam_loss(p1, z1, p2, z2)
        return nt_xent(z1, z2, self.hp["temperature"])

    def example_input(self, batch_size):
        return {"pixel_values": self.data.val[:1].expand(batch_size, -1, -1, -1).contiguous()}

    def features(self, model, inputs):
        return model.features(inputs)
