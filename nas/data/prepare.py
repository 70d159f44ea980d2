"""Prepare a study's data once: load, tokenise or resize, split, and cache by content fingerprint.

The result is shared with every trial of the study (through Ray's object store), so no trial re-tokenises.
A second study on the same corpus and settings loads the cached tensors instead of preparing them again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.catalog import DataError, Source, resolve_source
from nas.data.images import load_digits_arrays, load_folder_arrays
from nas.data.text import load_documents
from nas.data.tokenizer import TOKENIZER_VERSION, corpus_hash, load_tokenizer, tokenizer_dir
from nas.models.transformer import CLS_ID, SEP_ID
from nas.settings import cache_dir, staging_path
from nas.space.sections import DataSpec

PREPARE_VERSION = 1  # bump when the preparation below changes meaning


@dataclass
class PreparedData:
    kind: str  # "text" | "image"
    train: torch.Tensor  # token ids (N, seq_len) or images (N, C, S, S) in [-1, 1]
    val: torch.Tensor
    train_labels: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None
    tokenizer_dir: str | None = None
    fingerprint: str = ""
    cache_hit: bool = False
    info: dict[str, Any] = field(default_factory=dict)


def prepare_data(
    spec: DataSpec, kind: str, channels: int, seed: int = 0, tokenizer: Path | None = None
) -> PreparedData:
    """The study's tensors. ``tokenizer``: a tokenizer folder to encode text with (full pretraining keeps the
    export's token ids on any corpus) instead of the one trained on this corpus."""
    source = resolve_source(spec.source)
    if source.kind != kind:
        raise DataError(f"{spec.source!r} is {source.kind} data; this task needs {kind} data")
    if kind == "text":
        return _prepare_text(source, spec, seed, tokenizer)
    return _prepare_images(source, spec, channels, seed)


def _fingerprint(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _file_hash(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:20]
    except OSError as error:
        raise DataError(f"cannot read the tokenizer {path}: {error.strerror or error}") from None


def _load_cached(parts: dict[str, Any]) -> tuple[str, PreparedData | None]:
    """The fingerprint of what is prepared from ``parts`` (with PREPARE_VERSION), and its cached tensors if any."""
    fingerprint = _fingerprint({"v": PREPARE_VERSION, **parts})
    path = cache_dir("data") / f"{fingerprint}.pt"
    if not path.is_file():
        return fingerprint, None
    payload = torch.load(path, weights_only=False)
    payload["cache_hit"] = True
    return fingerprint, PreparedData(**payload)


def _store(data: PreparedData) -> PreparedData:
    path = cache_dir("data") / f"{data.fingerprint}.pt"
    tmp = staging_path(path)
    torch.save({k: v for k, v in data.__dict__.items() if k != "cache_hit"}, tmp)
    tmp.replace(path)
    return data


def _split(count: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(count)
    n_val = max(1, int(round(count * val_fraction)))
    return order[n_val:], order[:n_val]


def _prepare_text(source: Source, spec: DataSpec, seed: int, given_tokenizer: Path | None) -> PreparedData:
    documents = load_documents(source, spec.text_field)
    fingerprint, cached = _load_cached(
        {
            "corpus": corpus_hash(documents),
            "vocab": spec.vocab_size,
            "tokenizer": TOKENIZER_VERSION
            if given_tokenizer is None
            else _file_hash(given_tokenizer / "tokenizer.json"),
            "seq_len": spec.seq_len,
            "val": spec.val_fraction,
            "max": spec.max_samples,
            "seed": seed,
        }
    )
    if cached is not None:
        return cached
    if given_tokenizer is None:
        folder, tokenizer_hit = tokenizer_dir(documents, spec.vocab_size)
    else:
        folder, tokenizer_hit = given_tokenizer, True
    tokenizer = load_tokenizer(folder)
    encoded = tokenizer(documents, add_special_tokens=False)["input_ids"]
    stream: list[int] = []
    for ids in encoded:
        stream.extend(ids)
        stream.append(SEP_ID)
    body = spec.seq_len - 1
    blocks = len(stream) // body
    if spec.max_samples:
        blocks = min(blocks, spec.max_samples)
    if blocks < 4:
        raise DataError(
            f"{source.spec!r} gives only {blocks} sequences of {spec.seq_len} tokens, and training and its "
            "validation split need at least 4; use more text or a smaller data.seq_len"
        )
    ids = torch.tensor(stream[: blocks * body], dtype=torch.int64).view(blocks, body)
    ids = torch.cat([torch.full((blocks, 1), CLS_ID, dtype=torch.int64), ids], dim=1)
    train_index, val_index = _split(blocks, spec.val_fraction, seed)
    return _store(
        PreparedData(
            kind="text",
            train=ids[train_index].clone(),
            val=ids[val_index].clone(),
            tokenizer_dir=str(folder),
            fingerprint=fingerprint,
            info={
                "documents": len(documents),
                "tokens": len(stream),
                "sequences": blocks,
                "vocab_size": spec.vocab_size,
                "tokenizer_cache_hit": tokenizer_hit,
            },
        )
    )


def _prepare_images(source: Source, spec: DataSpec, channels: int, seed: int) -> PreparedData:
    if source.builtin == "digits":
        identity: Any = {"builtin": "digits"}
    else:
        identity = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in source.files]
    fingerprint, cached = _load_cached(
        {
            "images": identity,
            "size": spec.image_size,
            "channels": channels,
            "val": spec.val_fraction,
            "max": spec.max_samples,
            "seed": seed,
        }
    )
    if cached is not None:
        return cached
    labels: np.ndarray | None
    unreadable = 0
    if source.builtin == "digits":
        arrays, labels = load_digits_arrays()
        images = torch.from_numpy(arrays)
        if channels == 3:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[-1] != spec.image_size:
            images = torch.nn.functional.interpolate(images, size=spec.image_size, mode="bilinear", align_corners=False)
    else:
        arrays, labels, unreadable = load_folder_arrays(source, spec.image_size, channels)
        images = torch.from_numpy(arrays)
    images = (images.clamp(0, 1) - 0.5) / 0.5
    label_tensor = torch.from_numpy(labels) if labels is not None else None
    count = images.shape[0] if not spec.max_samples else min(images.shape[0], spec.max_samples)
    if count < 8:
        left_out = f" ({unreadable} more cannot be read)" if unreadable else ""
        raise DataError(f"{source.spec!r} holds only {count} readable images{left_out}; at least 8 are needed")
    train_index, val_index = _split(count, spec.val_fraction, seed)
    return _store(
        PreparedData(
            kind="image",
            train=images[train_index].contiguous(),
            val=images[val_index].contiguous(),
            train_labels=label_tensor[train_index] if label_tensor is not None else None,
            val_labels=label_tensor[val_index] if label_tensor is not None else None,
            fingerprint=fingerprint,
            info={"images": count, "labelled": label_tensor is not None, "unreadable_images": unreadable},
        )
    )
