"""Image data: scikit-learn's bundled digits (with labels), or a folder of PNG/JPEG files."""

from __future__ import annotations

import logging
from typing import cast

import numpy as np

from nas.catalog import DataError, Source

log = logging.getLogger(__name__)


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """1,797 grey 8x8 digits scaled to [0, 1] and their labels; bundled with scikit-learn, no download."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32)[:, None], digits.target.astype(np.int64)


def load_folder_arrays(source: Source, image_size: int, channels: int) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Images resized to ``image_size``; labels from class subfolders when every image sits in one; how many files
    could not be read. Unreadable files (truncated, not an image, a decompression bomb) are left out with a
    warning: a few bad files in a scraped folder should not stop a search; too few good ones do (the caller)."""
    from PIL import Image

    assert source.root is not None  # resolve_source sets root on every image-folder source
    root = source.root
    mode = "L" if channels == 1 else "RGB"
    images: list[np.ndarray] = []
    classes: list[str | None] = []
    unreadable: list[str] = []
    for path in source.files:
        try:
            with Image.open(path) as opened:
                image = opened.convert(mode).resize((image_size, image_size), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.float32) / 255.0
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            unreadable.append(f"{path.name} ({type(exc).__name__})")
            continue
        images.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
        relative = path.relative_to(root)
        classes.append(relative.parts[0] if len(relative.parts) > 1 else None)
    if unreadable:
        log.warning(
            "%d of %d images in %s cannot be read and are left out (%s)",
            len(unreadable),
            len(source.files),
            source.spec,
            ", ".join(unreadable[:5]) + (", ..." if len(unreadable) > 5 else ""),
        )
    if not images:
        raise DataError(f"{source.spec!r}: none of its {len(source.files)} images can be read ({unreadable[0]})")
    labels = None
    if all(c is not None for c in classes) and len(set(classes)) > 1:
        named = cast(list[str], classes)  # every entry was just checked to be a str
        names = sorted(set(named))
        labels = np.array([names.index(c) for c in named], dtype=np.int64)
    return np.stack(images), labels, len(unreadable)
