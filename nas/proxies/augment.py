"""Pure-torch augmentations for contrastive views (random resized crop, jitter, noise); no torchvision needed."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_view(images: torch.Tensor, generator: torch.Generator, min_scale: float = 0.6) -> torch.Tensor:
    """One augmented view per image: crop-and-resize via an affine grid, brightness/contrast jitter, noise."""
    n = images.shape[0]
    scale = min_scale + (1 - min_scale) * torch.rand(n, generator=generator)
    angle = (torch.rand(n, generator=generator) - 0.5) * (math.pi / 9)
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * 2 * (1 - scale)[:, None]
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    view = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    contrast = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=generator)
    brightness = (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.4
    view = view * contrast + brightness
    return view + 0.05 * torch.randn(view.shape, generator=generator)
