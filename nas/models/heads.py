"""Projection heads for contrastive pretraining of CNN backbones (SimCLR, SimSiam)."""

from __future__ import annotations

import torch
from torch import nn


def projection_mlp(in_dim: int, out_dim: int, hidden: int | None = None) -> nn.Sequential:
    hidden = hidden or out_dim
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
    )


class ContrastiveModel(nn.Module):
    """A transformers backbone + projector (+ predictor for SimSiam).

    ``forward`` returns ``(features, projection, prediction)``; ``prediction`` is None for SimCLR.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, projection_dim: int, method: str):
        super().__init__()
        self.backbone = backbone
        self.method = method
        self.projector = projection_mlp(feature_dim, projection_dim)
        self.predictor = (
            projection_mlp(projection_dim, projection_dim, hidden=max(projection_dim // 4, 1))
            if method == "simsiam"
            else None
        )

    @property
    def config(self):
        return self.backbone.config

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.backbone(pixel_values=pixel_values).pooler_output
        return pooled.flatten(1)

    def forward(self, pixel_values: torch.Tensor):
        features = self.features(pixel_values)
        projection = self.projector(features)
        prediction = self.predictor(projection) if self.predictor is not None else None
        return features, projection, prediction
