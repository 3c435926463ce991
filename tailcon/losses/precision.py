"""Numerical precision of the contrastive losses under mixed precision.

Similarities divided by small temperatures and their log-sum-exps lose too much in bf16/fp16, so
every contrastive loss runs outside autocast (:func:`full_precision`) in at least float32
(:func:`compute_dtype`): half-precision inputs are promoted, float64 stays float64.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in :func:`compute_dtype`: bf16/fp16 raised to float32, float32 and float64 kept (a
    float64 step stays float64 end to end, which is what float64 checks against the authors'
    code need; ``.float()`` would cast it down)."""
    return x.to(compute_dtype(x))


def full_precision(fn: F) -> F:
    """Run ``fn`` with autocast disabled on the device of its first tensor argument (autocast
    would otherwise cast its matrix products back to half precision)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        first = next((a for a in (*args, *kwargs.values()) if torch.is_tensor(a)), None)
        if first is None:
            return fn(*args, **kwargs)
        with torch.autocast(device_type=first.device.type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
