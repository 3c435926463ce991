"""Parametric contrastive losses: PaCo (Cui et al. 2021) and GPaCo (Cui et al. 2023), as in dvlab-research/Parametric-Contrastive-Learning@fe56535 PaCo/LT/losses.py and GPaCo/LT/losses.py.

Each anchor's softmax runs over C "class centres" (the classifier's logits, logit-adjusted by
the class prior) and the sample columns of a contrast set; the target puts ``beta`` on the
anchor's class centre and ``alpha`` on every other same-class sample. Computed exactly as the
authors' code does (float64-exact against their outputs): the row maximum is taken over the
whole row, the anchor's own column included, and the log-denominator gets ``+1e-12``.

The contrast set is what the caller passes: the authors compute the loss on each process's
local anchors against the (gathered) queue, so nothing is gathered here.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .precision import compute_dtype, full_precision



Counts = Union[Sequence[int], torch.Tensor]


@full_precision
def parametric_contrastive_loss(features: torch.Tensor, labels: torch.Tensor, centre_logits: torch.Tensor,
                                cls_num_list: Optional[Counts], *, temperature: float, alpha: float,
                                beta: float = 1.0, gamma: float = 1.0, supt: float = 1.0,
                                base_temperature: Optional[float] = None, smooth: float = 0.0) -> torch.Tensor:
    """The PaCo loss (PaCo/LT/losses.py) for the first ``Na = centre_logits.shape[0]`` rows of ``features``.

    features: [N, D] contrast set whose first Na rows are the anchors; labels: [N];
    centre_logits: [Na, C] classifier logits of the anchors; cls_num_list: [C] training counts
    (None: no prior). Returns the mean over the Na anchors.
    """
    dtype = compute_dtype(features)
    feats, centre = features.to(dtype), centre_logits.to(dtype)
    na, num_classes = centre.shape
    n = feats.shape[0]
    if cls_num_list is not None:
        counts = torch.as_tensor(cls_num_list, dtype=torch.float64, device=feats.device)
        centre = centre + torch.log(counts / counts.sum() + 1e-9).to(dtype)
    row = torch.cat([centre / supt, feats[:na] @ feats.t() / temperature], dim=1)  # [Na, C + N]
    row = row - row.max(dim=1, keepdim=True).values.detach()
    is_self = F.one_hot(torch.arange(na, device=feats.device), n).to(dtype)
    weights = torch.cat([torch.ones(na, num_classes, dtype=dtype, device=feats.device), gamma * (1 - is_self)], dim=1)
    log_prob = row - torch.log((weights * row.exp()).sum(dim=1, keepdim=True) + 1e-12)
    anchor_labels = labels[:na]
    target = F.one_hot(anchor_labels, num_classes).to(dtype)
    if smooth:
        target = target * (1 - smooth) + (1 - target) * smooth / (num_classes - 1)
    same = (anchor_labels[:, None] == labels[None, :]).to(dtype) * (1 - is_self)
    target = torch.cat([beta * target, alpha * same], dim=1)
    scale = temperature / (base_temperature if base_temperature is not None else temperature)
    return (-scale * (target * log_prob).sum(dim=1) / target.sum(dim=1)).mean()


def paco_loss(q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor, queue: torch.Tensor,
              queue_labels: torch.Tensor, sup_logits: torch.Tensor, cls_num_list: Counts, *, temperature: float,
              alpha: float, beta: float = 1.0, gamma: float = 1.0, supt: float = 1.0,
              base_temperature: Optional[float] = None) -> torch.Tensor:
    """PaCo (PaCo/LT/losses.py, ``Na = B``): the B queries are the anchors, ``[q; k; queue]`` the contrast set.

    q: [B, D] query projections; k: [B, D] momentum keys of the other view (constants);
    labels: [B]; queue: [K, D] slot-major, before this step's push (constants; K may be 0);
    queue_labels: [K]; sup_logits: [B, C] classifier logits of the query view; cls_num_list: [C].
    """
    features = torch.cat([q, k.detach().to(q.dtype), queue.detach().to(q.dtype)], dim=0)
    all_labels = torch.cat([labels, labels, queue_labels.to(labels.dtype)])
    return parametric_contrastive_loss(features, all_labels, sup_logits, cls_num_list, temperature=temperature,
                                       alpha=alpha, beta=beta, gamma=gamma, supt=supt,
                                       base_temperature=base_temperature)


def gpaco_loss(q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor, queue: torch.Tensor,
               queue_labels: torch.Tensor, sup_logits: torch.Tensor, cls_num_list: Optional[Counts] = None, *,
               temperature: float, alpha: float, beta: float = 1.0, gamma: float = 1.0, supt: float = 1.0,
               base_temperature: Optional[float] = None, smooth: float = 0.0) -> torch.Tensor:
    """GPaCo (GPaCo/LT/losses.py, ``Na = 2B``): both views are anchors, ``[q; k; queue]`` the contrast set.

    q, k: [B, D] projections of the two views from the same encoder (both receive gradients);
    labels: [B]; queue: [K, D] (constants); queue_labels: [K]; sup_logits: [2B, C] classifier
    logits, view-1 rows then view-2 rows; cls_num_list: [C] or None (no prior); smooth: label
    smoothing of the centre target.
    """
    features = torch.cat([q, k, queue.detach().to(q.dtype)], dim=0)
    all_labels = torch.cat([labels, labels, queue_labels.to(labels.dtype)])
    return parametric_contrastive_loss(features, all_labels, sup_logits, cls_num_list, temperature=temperature,
                                       alpha=alpha, beta=beta, gamma=gamma, supt=supt,
                                       base_temperature=base_temperature, smooth=smooth)


class PaCoLoss(nn.Module):
    def __init__(self, cls_num_list: Counts, temperature: float, alpha: float, beta: float = 1.0,
                 gamma: float = 1.0, supt: float = 1.0, base_temperature: Optional[float] = None):
        super().__init__()
        self.register_buffer("cls_num", torch.as_tensor(cls_num_list, dtype=torch.float64), persistent=False)
        self.kwargs = dict(temperature=temperature, alpha=alpha, beta=beta, gamma=gamma, supt=supt,
                           base_temperature=base_temperature)

    def forward(self, q, k, labels, queue, queue_labels, sup_logits):
        return paco_loss(q, k, labels, queue, queue_labels, sup_logits, self.cls_num, **self.kwargs)


class GPaCoLoss(nn.Module):
    def __init__(self, cls_num_list: Optional[Counts], temperature: float, alpha: float, beta: float = 1.0,
                 gamma: float = 1.0, supt: float = 1.0, base_temperature: Optional[float] = None,
                 smooth: float = 0.0):
        super().__init__()
        counts = None if cls_num_list is None else torch.as_tensor(cls_num_list, dtype=torch.float64)
        self.register_buffer("cls_num", counts, persistent=False)
        self.kwargs = dict(temperature=temperature, alpha=alpha, beta=beta, gamma=gamma, supt=supt,
                           base_temperature=base_temperature, smooth=smooth)

    def forward(self, q, k, labels, queue, queue_labels, sup_logits):
        return gpaco_loss(q, k, labels, queue, queue_labels, sup_logits, self.cls_num, **self.kwargs)
