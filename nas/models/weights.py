"""Whole-model weights as one safetensors file: the same format for every family (heads included), so a
trial's proxy-trained weights can be rebuilt into its model from the architecture config alone."""

from __future__ import annotations

from pathlib import Path

import torch

WEIGHTS_FILE = "weights.safetensors"


def save_weights(model: torch.nn.Module, folder: str | Path) -> Path:
    from safetensors.torch import save_model

    path = Path(folder) / WEIGHTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path))  # handles tied weights (BERT's decoder/embeddings) by saving one copy
    return path


def load_weights(model: torch.nn.Module, folder: str | Path) -> torch.nn.Module:
    from safetensors.torch import load_model

    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_FILE} in {folder}")
    missing, unexpected = load_model(model, str(path), strict=True)
    return model
