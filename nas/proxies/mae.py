"""Masked image modelling proxy (He et al., 2022, "Masked Autoencoders Are Scalable Vision Learners").

ViTMAE masks patches by ranking a per-patch noise tensor; passing the noise fixes the mask, so validation
noise drawn from the study seed gives every trial (of a given patch size) the same masks.
"""

from __future__ import annotations

from typing import Any

import torch

from nas.proxies.base import Proxy, unwrap


class MaskedAutoencoding(Proxy):
    task = "mae"

    def num_patches(self, model) -> int:
        config: Any = unwrap(model).config  # the transformers config (nn.Module types attributes as Tensor | Module)
        return (config.image_size // config.patch_size) ** 2

    def train_batch(self, generator):
        return {
            "pixel_values": self.sample_rows(self.data.train, generator),
            "noise_seed": torch.randint(0, 2**31 - 1, (1,), generator=generator),
        }

    def validation_batches(self, study_seed):
        return [
            {"pixel_values": rows, "noise_seed": torch.tensor([study_seed * 10_007 + index])}
            for index, rows in enumerate(self.fixed_rows())
        ]

    def loss(self, model, batch):
        pixels = batch["pixel_values"]
        generator = torch.Generator().manual_seed(int(batch["noise_seed"].item()))
        noise = torch.rand(pixels.shape[0], self.num_patches(model), generator=generator).to(pixels.device)
        return model(pixel_values=pixels, noise=noise).loss

    def example_input(self, batch_size):
        return {"pixel_values": self.data.val[:1].expand(batch_size, -1, -1, -1).contiguous()}

    def features(self, model, inputs):
        """Mean of the encoder's tokens with masking switched off."""
        encoder = model.vit
        saved = encoder.config.mask_ratio
        encoder.config.mask_ratio = 0.0
        try:
            hidden = encoder(pixel_values=inputs).last_hidden_state
        finally:
            encoder.config.mask_ratio = saved
        return hidden.mean(dim=1)
