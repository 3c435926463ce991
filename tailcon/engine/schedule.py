"""Per-epoch learning-rate schedules with linear warm-up (spec 4.4).

Epochs are 0-based; the lr is constant within an epoch, as in the authors' code.
"""

from __future__ import annotations

import math
from typing import Any, Mapping


def lr_at_epoch(epoch: int, optim: Mapping[str, Any], num_epochs: int) -> float:
    lr0 = float(optim["lr"])
    warm = int(optim.get("warmup_epochs") or 0)
    if epoch < warm:
        return lr0 * (epoch + 1) / warm
    kind = optim.get("schedule", "cosine")
    if kind == "cosine":  # reaches pi only at the virtual epoch E: the last epoch's lr is > 0
        return lr0 * 0.5 * (1.0 + math.cos(math.pi * (epoch - warm + 1) / (num_epochs - warm + 1)))
    if kind == "step":
        passed = sum(1 for m in optim.get("milestones") or [] if epoch >= int(m))
        return lr0 * float(optim.get("gamma", 0.1)) ** passed
    if kind == "constant":
        return lr0
    raise ValueError(f"unknown optim.schedule {kind!r}; expected cosine, step or constant")
