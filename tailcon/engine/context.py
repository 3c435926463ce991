"""What one run resolves before it trains, resolved once and handed down: the validated config,
the device and mixed precision, the run directory's lock, and the checkpoint it continues."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch

from .. import resolution
from ..rundir import RunLock
from .device import resolve_amp, resolve_device


@dataclass
class RunContext:
    cfg: dict[str, Any]  # resolved and validated (tailcon.resolution.validate)
    device: torch.device
    amp: str  # none | bf16 | fp16 (``auto`` resolved for this device)
    resume_from: Optional[Mapping[str, Any]] = None  # the checkpoint continued, read once; None: a fresh start
    lock: Optional[RunLock] = None  # the run directory's lock, held by the main process

    @classmethod
    def of(cls, cfg: dict[str, Any], resume_from: Optional[Mapping[str, Any]] = None,
           lock: Optional[RunLock] = None) -> "RunContext":
        """Validate ``cfg`` and resolve its device and precision (a wrong value fails here, before
        anything is built or written)."""
        cfg = resolution.validate(cfg)
        device = resolve_device(cfg["device"])
        return cls(cfg, device, resolve_amp(device, cfg["train"]["amp"]), resume_from, lock)
