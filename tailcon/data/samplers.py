"""Samplers for long-tailed training sets.

``instance``: plain shuffling (every image once per epoch).
``class_balanced``: each draw picks a class uniformly, then an image uniformly within it.
``sqrt``: class probability proportional to sqrt(n_c), then uniform within the class.

The epoch's order comes from ``seed + epoch`` (call :meth:`set_epoch`), so a resumed run draws
exactly the batches an uninterrupted one would. The trainer splits each *global* batch of this
order across DDP ranks (:class:`tailcon.data.loaders.GlobalBatches`).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from ..config import ConfigError


SAMPLERS = ("instance", "class_balanced", "sqrt")


class EpochSampler(Sampler[int]):
    def __init__(self, targets: Sequence[int], mode: str = "instance", seed: int = 0,
                 num_samples: int | None = None):
        if mode not in SAMPLERS:
            raise ConfigError(f"unknown sampler {mode!r}; expected one of {', '.join(SAMPLERS)}")
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        self.mode, self.seed, self.epoch = mode, seed, 0
        self.total = int(num_samples or len(self.targets))
        counts = torch.bincount(self.targets)
        self.order = torch.argsort(self.targets, stable=True)  # image indices grouped by class
        self.starts = torch.cumsum(counts, 0) - counts
        self.counts = counts
        present = (counts > 0).double()
        weights = present if mode == "class_balanced" else counts.double().sqrt()
        self.class_probs = weights / weights.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_indices(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        if self.mode == "instance":
            return torch.randperm(len(self.targets), generator=g)[: self.total]
        cls = torch.multinomial(self.class_probs, self.total, replacement=True, generator=g)
        offset = (torch.rand(self.total, generator=g, dtype=torch.float64) * self.counts[cls]).long()
        return self.order[self.starts[cls] + offset]

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_indices().tolist())

    def __len__(self) -> int:
        return self.total
