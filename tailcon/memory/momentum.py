"""Momentum (EMA) key encoder, MoCo style."""

from __future__ import annotations

import copy

import torch
from torch import nn


class MomentumEncoder(nn.Module):
    """A frozen copy of ``online`` updated as theta_k <- m theta_k + (1 - m) theta_q (parameters
    only; BN running statistics evolve through the key encoder's own forward passes)."""

    def __init__(self, online: nn.Module, momentum: float = 0.999):
        super().__init__()
        self.encoder = copy.deepcopy(online)
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.momentum = momentum
        self._online = (online,)  # a tuple: not a submodule, so not saved or moved twice

    @torch.no_grad()
    def copy_online(self) -> None:
        """Start again as a copy of the online encoder (after weights were loaded into it)."""
        self.encoder.load_state_dict(self._online[0].state_dict())

    @torch.no_grad()
    def update(self, online: nn.Module) -> None:
        k = list(self.encoder.parameters())
        q = [p.detach() for p in online.parameters()]
        torch._foreach_mul_(k, self.momentum)
        torch._foreach_add_(k, q, alpha=1.0 - self.momentum)

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.encoder(*args, **kwargs)
