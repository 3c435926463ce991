"""Optimisers: ``optim.name: sgd | adamw | lars``.

- ``sgd``: weight decay on every parameter, as the authors' code of every method here does.
- ``adamw``: decoupled weight decay on weights only; biases and normalisation parameters
  (every parameter with at most one dimension) get none, the usual practice.
- ``lars``: SGD with momentum and layer-wise trust ratios (You et al. 2017) for large-batch
  contrastive pre-training. Biases and normalisation parameters are excluded from both weight
  decay and adaptation, as SimCLR/BYOL-style implementations do.

The schedules set ``lr`` on every parameter group, so each optimiser works with each schedule.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adamw", "lars")


def _split_decay(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights, biases and normalisation parameters) among the trainable parameters."""
    decay, plain = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else plain).append(p)
    return decay, plain


class LARS(torch.optim.Optimizer):
    """SGD with momentum where each parameter's step is scaled by its trust ratio
    ``eta * ||w|| / ||g + wd * w||`` (1 when either norm is 0). Groups with ``exclude=True`` take
    plain momentum SGD steps without weight decay. No host syncs: the ratios stay on the device."""

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, exclude: bool = False):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        exclude=exclude)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not group["exclude"]:
                    d = d.add(p, alpha=group["weight_decay"])
                    w_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    ratio = torch.where((w_norm > 0) & (d_norm > 0),
                                        group["trust_coefficient"] * w_norm / d_norm.clamp_min(1e-30),
                                        torch.ones_like(w_norm))
                    d = d.mul(ratio)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = d.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def build_optimizer(module: nn.Module, o: Mapping[str, Any]) -> torch.optim.Optimizer:
    """The optimiser ``o["name"]`` over ``module``'s parameters with ``optim.*`` settings ``o``."""
    lr, wd = float(o["lr"]), float(o["weight_decay"])
    if o["name"] == "sgd":
        return torch.optim.SGD(module.parameters(), lr=lr, momentum=float(o["momentum"]),
                               nesterov=bool(o["nesterov"]), weight_decay=wd)
    decay, plain = _split_decay(module)
    if o["name"] == "adamw":
        betas = tuple(float(b) for b in o["betas"])
        return torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": plain, "weight_decay": 0.0}],
                                 lr=lr, betas=betas, eps=float(o["eps"]))
    if o["name"] == "lars":
        eta = float(o["trust_coefficient"])
        return LARS([{"params": decay}, {"params": plain, "exclude": True, "weight_decay": 0.0}], lr=lr,
                    momentum=float(o["momentum"]), weight_decay=wd, trust_coefficient=eta)
    raise ValueError(f"unknown optim.name {o['name']!r}; known: {', '.join(OPTIMIZERS)}")
