"""Per-epoch learning-rate schedules with linear warm-up, as the authors' codes set them.

Epochs are 0-based; the lr is constant within an epoch, as in the authors' code.

* ``cosine`` (BCL): lr0 * 0.5 * (1 + cos(pi * (e - W + 1) / (E - W + 1))); the last epoch stays above 0.
* ``cosine_end`` (ResCom): eta + (lr0 - eta) * 0.5 * (1 + cos(pi * (e + 1 - W) / (E - W))), eta = lr0 * min_lr_ratio.
* ``step``: lr0 * gamma ** (number of milestones <= e).  ``constant``: lr0.
Warm-up (all): lr0 * (e + 1) / W for e < W (and e = W with ``warmup_overshoot``: PaCo's CIFAR quirk).
``optim.per_iteration``: set every step from the fractional epoch (:func:`lr_at_position`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from .. import config


SCHEDULES = config.choices("optim.schedule")


def lr_at_epoch(epoch: int, optim: Mapping[str, Any], num_epochs: int) -> float:
    optim = {**config.DEFAULTS["optim"], **optim}  # the defaults live in one place
    lr0 = float(optim["lr"])
    warm = int(optim["warmup_epochs"])
    if epoch < warm or (optim["warmup_overshoot"] and epoch == warm and warm > 0):
        return lr0 * (epoch + 1) / warm
    kind = optim["schedule"]
    if kind == "cosine":  # reaches pi only at the virtual epoch E: the last epoch's lr is > 0
        return lr0 * 0.5 * (1.0 + math.cos(math.pi * (epoch - warm + 1) / (num_epochs - warm + 1)))
    if kind == "cosine_end":  # ResCom large-scale form: reaches min_lr at the end of the last epoch
        eta = lr0 * float(optim["min_lr_ratio"])
        return eta + (lr0 - eta) * 0.5 * (1.0 + math.cos(math.pi * (epoch + 1 - warm) / max(1, num_epochs - warm)))
    if kind == "step":
        passed = sum(1 for m in optim["milestones"] or [] if epoch >= int(m))
        return lr0 * float(optim["gamma"]) ** passed
    if kind == "constant":
        return lr0
    raise ValueError(f"unknown optim.schedule {kind!r}; expected one of {', '.join(SCHEDULES)}")


def lr_at_position(position: float, optim: Mapping[str, Any], num_epochs: int) -> float:
    """``optim.per_iteration``: the lr at a fractional epoch ``position = epoch + step / steps``
    (DSCL's code: SY-Xuan/DSCL@79f8cef main.py, train()): warm-up lr0 * e / W, then cosine (``cosine`` and
    ``cosine_end``) eta + (lr0 - eta) * 0.5 * (1 + cos(pi * (e - W) / (E - W))); step and constant
    schedules change at epoch boundaries only."""
    optim = {**config.DEFAULTS["optim"], **optim}
    lr0, warm, kind = float(optim["lr"]), int(optim["warmup_epochs"]), optim["schedule"]
    if position < warm:
        return lr0 * position / warm
    if kind in ("cosine", "cosine_end"):
        eta = lr0 * float(optim["min_lr_ratio"]) if kind == "cosine_end" else 0.0
        return eta + (lr0 - eta) * 0.5 * (1.0 + math.cos(math.pi * (position - warm) / max(1, num_epochs - warm)))
    return lr_at_epoch(int(position), optim, num_epochs)
