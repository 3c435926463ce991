"""Long-tailed subsets of balanced datasets (CIFAR-LT as kaidic/LDAM-DRW imbalance_cifar.py builds it)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .datasets import DataError


def long_tail_counts(num_classes: int, max_per_class: int, imbalance_factor: float,
                     profile: str = "exp") -> list[int]:
    """Per-class image counts of a long-tailed subset.

    ``exp``: n_i = floor(max_per_class * (1/IF) ** (i / (C-1))), computed in float64 as the
    LDAM-DRW code does (class 0 is the head, class C-1 keeps max_per_class / IF).
    ``step``: the first half of the classes keep ``max_per_class``, the rest
    ``floor(max_per_class / IF)``.

    >>> long_tail_counts(10, 5000, 100)
    [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if max_per_class < 1:
        raise ValueError(f"max_per_class must be >= 1, got {max_per_class}")
    if imbalance_factor < 1:
        raise ValueError(f"imbalance_factor must be >= 1 (head/tail ratio), got {imbalance_factor}")
    ratio = 1.0 / float(imbalance_factor)  # the reference code passes this inverse (0.01 for IF 100)
    if profile == "exp":
        if num_classes == 1:
            return [int(max_per_class)]
        return [int(max_per_class * ratio ** (i / (num_classes - 1.0))) for i in range(num_classes)]
    if profile == "step":
        half = num_classes // 2
        return [int(max_per_class)] * half + [int(max_per_class * ratio)] * (num_classes - half)
    raise ValueError(f"unknown imbalance profile {profile!r}; expected 'exp' or 'step'")


def select_long_tail_indices(targets: Sequence[int], counts: Sequence[int], seed: int = 0) -> np.ndarray:
    """Indices of the kept images, class by class (the new set is sorted by class).

    Reproduces the reference exactly: one legacy NumPy Mersenne-Twister RNG seeded once with
    ``seed``; for class 0, 1, ... in order, the class's indices (in original order) are shuffled
    in place with that RNG and the first ``counts[c]`` are kept.
    """
    targets = np.asarray(targets, dtype=np.int64)
    rng = np.random.RandomState(seed)
    kept = []
    for c, n in enumerate(counts):  # runs once per dataset build, not in a training step
        idx = np.flatnonzero(targets == c)
        if n > len(idx):
            raise DataError(f"class {c} has {len(idx)} images, cannot keep {n}")
        rng.shuffle(idx)
        kept.append(idx[:n])
    return np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
