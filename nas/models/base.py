"""The contract every model family meets.

A family turns a plain architecture config (JSON data, as stored on the Optuna trial) into a transformers
model, and counts its parameters analytically so that ``params`` constraints are checked before anything
is built or trained. The shared contract test (tests/models/test_family_contract.py) runs over the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from nas.registry import Registry

if TYPE_CHECKING:
    from pathlib import Path

    import torch


@dataclass(frozen=True)
class DataShape:
    """What a model needs to know about its data: text vocabulary and length, or image size and channels."""

    vocab_size: int = 0
    seq_len: int = 0
    image_size: int = 0
    channels: int = 0


@dataclass(frozen=True)
class ParamCount:
    total: int
    non_embedding: int


@dataclass(frozen=True)
class ArchKey:
    """One architecture key a family accepts: its type, default, allowed values and lower bound."""

    kind: type[Any]
    default: Any = None
    allowed: tuple[Any, ...] | None = None
    minimum: float | None = None

    def problem(self, value: Any) -> str | None:
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(value, str) and "e" in value.lower() else ""
            return f"expected {self.kind.__name__}, got {value!r}{hint}"
        if self.allowed is not None and value not in self.allowed:
            return f"{value!r} is not one of {list(self.allowed)}"
        if self.minimum is not None and value < self.minimum:
            return f"{value!r} is below the minimum {self.minimum}"
        return None


class ModelFamily:
    """Base class of a family. Subclasses set ``name``, ``tasks`` and ``arch_keys`` and implement the methods."""

    name: str = ""
    tasks: tuple[str, ...] = ()
    arch_keys: dict[str, ArchKey] = {}
    # Keys that change what the proxy loss measures; searching them makes val_loss incomparable across trials.
    loss_defining_keys: tuple[str, ...] = ()

    def resolve(self, values: dict[str, Any]) -> dict[str, Any]:
        """The complete architecture config: sampled values plus defaults for every key not given."""
        config = {key: spec.default for key, spec in self.arch_keys.items() if spec.default is not None}
        config.update(values)
        return config

    def check(self, arch: dict[str, Any], data: DataShape) -> list[tuple[str, str]]:
        """Intrinsic constraints of the family as (architecture key, problem) pairs; empty when buildable."""
        return []

    def count_params(self, arch: dict[str, Any], data: DataShape) -> ParamCount:
        raise NotImplementedError

    def count_flops(self, arch: dict[str, Any], data: DataShape) -> int:
        """Forward FLOPs of one sample through the pretraining model (2 per multiply-add of every matmul and
        convolution), counted analytically so that ``flops`` constraints are decided before anything is built.
        The same on every device, unlike a counter, which misses attention where SDPA runs as one fused kernel."""
        raise NotImplementedError

    def build(self, arch: dict[str, Any], data: DataShape) -> torch.nn.Module:
        raise NotImplementedError

    # Files ``save_pretrained`` writes beside transformers' own config.json and model.safetensors.
    extra_files: tuple[str, ...] = ()

    def save_pretrained(self, model: torch.nn.Module, folder: Path) -> None:
        """Write ``model`` (as ``build`` made it) as a save_pretrained folder that ``load_pretrained`` reads back."""
        cast(Any, model).save_pretrained(folder)  # a transformers PreTrainedModel; nn.Module has no such method

    def load_pretrained(self, folder: Path, arch: dict[str, Any]) -> torch.nn.Module:
        """The trainable model (what ``build`` makes) from a folder ``save_pretrained`` wrote."""
        raise NotImplementedError

    def hf_config(self, arch: dict[str, Any], data: DataShape) -> Any:
        """The transformers config object the built model uses (what ``save_pretrained`` writes)."""
        raise NotImplementedError

    def width(self, arch: dict[str, Any]) -> int:
        """The width that hidden matrices' fan-in grows with (for ``proxy.lr_scaling: width``)."""
        return int(arch["hidden_size"])

    def describe(self, arch: dict[str, Any]) -> str:
        """A one-line shape, for tables."""
        return ", ".join(f"{k}={v}" for k, v in arch.items())


FAMILIES: Registry[ModelFamily] = Registry("family")


def register_family(cls: type[ModelFamily]) -> type[ModelFamily]:
    FAMILIES.register(cls.name)(cls())
    return cls


def get_family(name: str) -> ModelFamily:
    import nas.models  # noqa: F401  (registers the built-in families)

    return FAMILIES.get(name)
