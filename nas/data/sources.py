"""Where a space's data comes from: a built-in corpus (no download) or files the user points to."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

BUILTIN_PREFIX = "builtin:"
BUILTIN_SOURCES = {"python-docs": "text", "digits": "image"}
TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Source:
    spec: str
    kind: str  # "text" | "image"
    builtin: str | None = None
    files: tuple[Path, ...] = ()
    root: Path | None = None  # image folder root (class subfolders give labels)


def resolve_source(spec: str) -> Source:
    """Resolve ``data.source``; raises ValueError with a message a person can act on."""
    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX):]
        if name not in BUILTIN_SOURCES:
            raise ValueError(f"unknown built-in data set {name!r}; built-ins: "
                             + ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_SOURCES))
        return Source(spec, BUILTIN_SOURCES[name], builtin=name)
    expanded = os.path.expanduser(spec)
    path = Path(expanded)
    if path.is_dir():
        images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        texts = sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES)
        if images:
            return Source(spec, "image", files=tuple(images), root=path)
        if texts:
            return Source(spec, "text", files=tuple(texts))
        raise ValueError(f"folder {spec!r} holds no .png/.jpg images and no .txt/.jsonl/.parquet files")
    matches = sorted(Path(p) for p in glob.glob(expanded, recursive=True)) if glob.has_magic(expanded) else (
        [path] if path.is_file() else [])
    if not matches:
        raise ValueError(f"no file or folder matches {spec!r}")
    unsupported = [p for p in matches if p.suffix.lower() not in TEXT_SUFFIXES]
    if unsupported:
        raise ValueError(f"{unsupported[0]} is not a .txt, .jsonl or .parquet file")
    return Source(spec, "text", files=tuple(matches))
