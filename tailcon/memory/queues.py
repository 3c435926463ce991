"""Label-aware key queues (slot-major: one row per stored key).

Both queues are ``nn.Module`` buffers, so they move with the model, are saved in checkpoints and
are broadcast by DDP. ``push`` first gathers keys and labels from all ranks in rank order, so
every replica applies the same update and N ranks hold what one process with the whole batch
would hold. Updates are vectorised (no Python loop over keys) and reproduce the sequential
semantics of the authors' loops exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import gather_no_grad


class ClassBalancedQueue(nn.Module):
    """ResCom's class-balanced queue (dvlab-research/Imbalanced-Learning@cc9b810 ResCom/rescom/builder.py): Q slots per class, one write pointer per class.

    Buffers: ``keys`` [C*Q, D] (slot j belongs to class j // Q), initialised with normalised
    standard-normal rows; ``ptr`` [C] (long), all 0.
    """

    def __init__(self, num_classes: int, size_per_class: int, dim: int):
        super().__init__()
        self.num_classes, self.size_per_class, self.dim = num_classes, size_per_class, dim
        self.register_buffer("keys", F.normalize(torch.randn(num_classes * size_per_class, dim), dim=1))
        self.register_buffer("ptr", torch.zeros(num_classes, dtype=torch.long))

    @torch.no_grad()
    def push(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Insert ``keys`` [N, D] with ``labels`` [N] as if one at a time in order: key n of class c
        goes to slot c*Q + ptr[c], then ptr[c] = (ptr[c] + 1) mod Q. More than Q keys of one class
        in a push overwrite within the push (the last Q survive)."""
        keys, labels = gather_no_grad(keys.detach()), gather_no_grad(labels)
        q = self.size_per_class
        counts = torch.bincount(labels, minlength=self.num_classes)
        order = torch.argsort(labels, stable=True)
        rank_sorted = torch.arange(labels.numel(), device=labels.device) - (torch.cumsum(counts, 0) - counts)[labels[order]]
        rank = torch.empty_like(rank_sorted).scatter_(0, order, rank_sorted)  # n-th key of its class in this push
        slot = labels * q + (self.ptr[labels] + rank) % q
        keep = rank >= counts[labels] - q  # earlier keys would be overwritten by later ones anyway
        self.keys.index_copy_(0, slot[keep], keys[keep].to(self.keys.dtype))
        self.ptr.copy_((self.ptr + counts) % q)


class LabeledQueue(nn.Module):
    """DSCL's and PaCo's FIFO queue of keys with labels (SY-Xuan/DSCL@79f8cef dscl/DSCL.py; PaCo/LT/moco/builder.py).

    Buffers: ``keys`` [K, D], ``labels`` [K] (long), ``ptr`` (0-d long). Unlike the authors' code,
    which starts with random labels in [0, 1000) that act as spurious positives, empty slots carry
    label -1 and the losses ignore them (``random_init_labels=True`` restores the authors'
    behaviour with ``init_label_range`` classes). K need not be a multiple of the batch: a push
    wraps around the end.
    """

    def __init__(self, size: int, dim: int, random_init_labels: bool = False, init_label_range: int = 1000,
                 normalize_dim: int = 1):
        """``normalize_dim=0`` reproduces PaCo's initialisation: ``randn(K, D)`` normalised along
        the queue axis, so each feature column (not each key) has unit norm (PaCo/LT/moco/builder.py)."""
        super().__init__()
        self.size, self.dim = size, dim
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=normalize_dim))
        labels = torch.randint(0, init_label_range, (size,)) if random_init_labels else torch.full((size,), -1)
        self.register_buffer("labels", labels.long())
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Write ``keys`` [N, D] and ``labels`` [N] at ptr .. ptr+N-1 (mod K); ptr = (ptr + N) mod K.
        A queue of size 0 (PaCo without memory) keeps nothing."""
        keys, labels = gather_no_grad(keys.detach()), gather_no_grad(labels)
        if self.size == 0:
            return
        n = labels.numel()
        if n > self.size:  # only the last K survive
            keys, labels, skipped = keys[-self.size:], labels[-self.size:], n - self.size
        else:
            skipped = 0
        idx = (self.ptr + skipped + torch.arange(labels.numel(), device=self.keys.device)) % self.size
        self.keys.index_copy_(0, idx, keys.to(self.keys.dtype))
        self.labels.index_copy_(0, idx, labels.long())
        self.ptr.copy_((self.ptr + n) % self.size)
