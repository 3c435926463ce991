"""Where and in what precision a run computes: device choice, mixed precision."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import torch

from .. import config
from .. import distributed


def resolve_device(name: Optional[str]) -> torch.device:
    """``auto``: CUDA when available, else the CPU; under torchrun, this process's GPU."""
    local = distributed.local_device(name)
    if local is not None:
        return local
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise config.ConfigError(f"device={name!r} but CUDA is not available on this machine; use device=cpu or auto")
    return dev


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Sapphire Rapids and later), as torch reports it."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def resolve_amp(device: torch.device, amp: str) -> str:
    """``auto``: bf16 on a CUDA GPU that supports it, otherwise none: CPUs without bf16 units run
    it 10x slower than fp32, and on CPUs with AMX, 1.6x faster, accuracy parity was not shown
    (docs/benchmarks.md), so bf16 on a CPU is an explicit ``train.amp=bf16``. fp16 needs CUDA (its
    loss scaling is a GPU feature here)."""
    if amp == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "none"
    if amp == "fp16" and device.type != "cuda":
        raise config.ConfigError("train.amp=fp16 needs a CUDA device; use train.amp=bf16 or none")
    return amp


def autocast_context(device: torch.device, amp: str):
    """The autocast region of a forward pass under ``train.amp`` (resolved or ``auto``)."""
    amp = resolve_amp(device, amp)
    if amp == "none":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[amp])
