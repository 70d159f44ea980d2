"""Image data: scikit-learn's bundled digits (with labels), or a folder of PNG/JPEG files."""

from __future__ import annotations

import numpy as np

from nas.data.sources import Source


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """1,797 grey 8x8 digits scaled to [0, 1] and their labels; bundled with scikit-learn, no download."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32)[:, None], digits.target.astype(np.int64)


def load_folder_arrays(source: Source, image_size: int, channels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Images resized to ``image_size``; labels from class subfolders when every image sits in one."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    images, classes = [], []
    for path in source.files:
        try:
            with Image.open(path) as image:
                image = image.convert(mode).resize((image_size, image_size), Image.BILINEAR)
                array = np.asarray(image, dtype=np.float32) / 255.0
        except OSError as exc:
            raise ValueError(f"{path}: not a readable image ({exc})") from None
        images.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
        relative = path.relative_to(source.root)
        classes.append(relative.parts[0] if len(relative.parts) > 1 else None)
    labels = None
    if all(c is not None for c in classes) and len(set(classes)) > 1:
        names = sorted(set(classes))
        labels = np.array([names.index(c) for c in classes], dtype=np.int64)
    return np.stack(images), labels
