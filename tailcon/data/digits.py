"""The embedded default dataset: scikit-learn's handwritten digits, made long-tailed.

``sklearn.datasets.load_digits`` ships 1797 real 8x8 grey images of the digits 0-9 inside the
scikit-learn package, so it needs no download. tailcon upsamples them to 16x16 RGB and splits
them reproducibly, per class: 30 test images, 10 validation images, and the rest as the
training pool (at least 134 per class), from which the long-tailed training set is drawn
with the CIFAR-LT rule (``max_per_class`` 130, imbalance factor 10 by default: 130 ... 13
images, so Many, Medium and Few groups are all present).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

TEST_PER_CLASS = 30
VAL_PER_CLASS = 10
MAX_PER_CLASS = 130
SIZE = 16


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as uint8 [N, 16, 16, 3] and labels [N]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    grey = np.clip(d.images * 16.0, 0, 255).astype(np.uint8)  # values 0..16 -> 0..255
    big = np.stack([np.asarray(Image.fromarray(g).resize((SIZE, SIZE), Image.BILINEAR)) for g in grey])
    return np.repeat(big[..., None], 3, axis=-1), d.target.astype(np.int64)


def split_digits(targets: np.ndarray, seed: int = 1234) -> dict[str, np.ndarray]:
    """Indices of the test, val and train-pool splits (balanced test and val)."""
    rng = np.random.RandomState(seed)
    parts: dict[str, list] = {"test": [], "val": [], "train": []}
    for c in range(10):
        idx = np.flatnonzero(targets == c)
        rng.shuffle(idx)
        parts["test"].append(idx[:TEST_PER_CLASS])
        parts["val"].append(idx[TEST_PER_CLASS:TEST_PER_CLASS + VAL_PER_CLASS])
        parts["train"].append(np.sort(idx[TEST_PER_CLASS + VAL_PER_CLASS:]))
    return {k: np.concatenate(v) for k, v in parts.items()}
