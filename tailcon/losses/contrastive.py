"""Supervised contrastive losses: SupCon (Khosla et al. 2020), BCL's balanced contrastive loss
(Zhu et al. 2022) and Hybrid-PSC's prototypical loss (Wang et al. 2021).

All inputs are L2-normalised already; nothing here re-normalises. Half-precision inputs are
computed in float32 (the exponentials and log-sums are where precision matters) and float64
stays float64. Under torch.distributed the features and labels of all ranks are gathered
(gradients flow back to the local shard, see :mod:`tailcon.distributed`), so every rank computes
the loss of the whole global batch.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


from ..distributed import gather_no_grad, gather_with_grad
from .precision import compute_dtype, full_precision


def _view_major(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, V, D] -> ([V*B, D] with row v*B + i = features[i, v], labels repeated V times),
    after gathering the batch from every rank."""
    if features.dim() != 3:
        raise ValueError(f"features must be [B, V, D], got shape {tuple(features.shape)}")
    if labels.shape != features.shape[:1]:
        raise ValueError(f"labels must be [B] = [{features.shape[0]}], got shape {tuple(labels.shape)}")
    features, labels = gather_with_grad(features), gather_no_grad(labels)
    b, v, d = features.shape
    return features.transpose(0, 1).reshape(v * b, d), labels.repeat(v)


@full_precision
def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float,
                base_temperature: Optional[float] = None) -> torch.Tensor:
    """SupCon "L_out", all views as anchors (Khosla et al., arXiv:2004.11362, Eq. 2; HobbitLong/SupContrast losses.py).

    features: [B, V, D] unit-norm embeddings (V >= 1 views per sample); labels: [B].
    For each of the N = V*B anchors a: positives are all other entries with its label, the
    denominator runs over all entries but a itself, and
    l_a = -(tau / tau_b) * mean_{p in P(a)} [s_ap - log sum_{k != a} exp(s_ak)], s = <z, z'> / tau.
    Returns the mean over anchors, a 0-d tensor. An anchor without positives (possible only with
    V = 1) contributes 0 instead of NaN.
    """
    base_temperature = temperature if base_temperature is None else base_temperature
    z, lab = _view_major(features, labels)
    z = z.to(compute_dtype(z))
    n = z.shape[0]
    sim = z @ z.t() / temperature
    sim = sim - sim.max(dim=1, keepdim=True).values.detach()  # cancels exactly; guards exp overflow
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = (lab[:, None] == lab[None, :]) & ~self_mask
    log_denom = torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    log_prob = sim - log_denom
    num_pos = pos.sum(dim=1)
    mean_log_prob_pos = (log_prob * pos).sum(dim=1) / num_pos.clamp_min(1)
    return (-(temperature / base_temperature) * mean_log_prob_pos).mean()


@full_precision
def bcl_loss(features: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """BCL's balanced contrastive loss, as the authors implemented it (FlamieZhu/Balanced-Contrastive-Learning@8fb4289 loss/contrastive.py).

    features: [B, 2, D] unit-norm embeddings of the two contrastive views (any V >= 2 works;
    the reference fixes V = 2); labels: [B]; centers: [C, D] unit-norm class centres, C =
    ``centers.shape[0]``. Anchors are the V*B views; the contrast set is the views plus the C
    centres (centre m has label m). The denominator of anchor i is the sum over classes of the
    *mean* exp-similarity of that class's entries other than i (class-averaging; every class
    present through its centre: class-complement); the numerator averages over all positives,
    the class centre included. Returns the mean over the V*B anchors, a 0-d tensor.
    """
    z, lab = _view_major(features, labels)
    dtype = compute_dtype(z)
    z, centers = z.to(dtype), centers.to(dtype)
    num_classes = centers.shape[0]
    n = z.shape[0]
    contrast = torch.cat([z, centers], dim=0)  # [N + C, D]
    contrast_lab = torch.cat([lab, torch.arange(num_classes, device=lab.device)])
    sim = z @ contrast.t() / temperature  # [N, N + C]
    sim = sim - sim.max(dim=1, keepdim=True).values.detach()
    same = lab[:, None] == contrast_lab[None, :]
    self_mask = torch.zeros_like(same)
    self_mask[:, :n] = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = same & ~self_mask
    # entries of each class in the contrast set (its samples' views plus its centre); for the
    # anchor's own class the anchor itself is not counted
    class_size = torch.bincount(contrast_lab, minlength=num_classes).to(dtype)
    weight = class_size[contrast_lab][None, :] - same.to(dtype)
    log_terms = (sim - torch.log(weight.clamp_min(1))).masked_fill(self_mask, float("-inf"))
    log_denom = torch.logsumexp(log_terms, dim=1, keepdim=True)
    mean_log_prob_pos = ((sim - log_denom) * pos).sum(dim=1) / pos.sum(dim=1).clamp_min(1)
    return -mean_log_prob_pos.mean()


@full_precision
def psc_loss(features: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor, temperature: float,
             include_positive_in_denominator: bool = False) -> torch.Tensor:
    """Hybrid-PSC's prototypical supervised contrastive loss (Wang et al., CVPR 2021, arXiv:2103.14267; no code was released).

    features: [B, V, D] unit-norm embeddings (every view is an anchor); labels: [B];
    prototypes: [C, D] unit-norm class prototypes (C >= 2). For a view z of class y:
    l = -<z, p_y>/tau + log sum_{j != y} exp(<z, p_j>/tau) (the paper's form: the positive is
    *not* in the denominator, so l can be negative), or with
    ``include_positive_in_denominator=True`` ordinary prototype-softmax CE. Returns the mean
    over the V*B views. Needs no gather: each view only meets the prototypes.
    """
    if features.dim() != 3:
        raise ValueError(f"features must be [B, V, D], got shape {tuple(features.shape)}")
    dtype = compute_dtype(features)
    b, v, d = features.shape
    z = features.transpose(0, 1).reshape(v * b, d).to(dtype)
    lab = labels.repeat(v)
    logits = z @ prototypes.to(dtype).t() / temperature  # [V*B, C]
    positive = logits.gather(1, lab[:, None]).squeeze(1)
    if not include_positive_in_denominator:
        logits = logits.masked_fill(F.one_hot(lab, logits.shape[1]).bool(), float("-inf"))
    return (torch.logsumexp(logits, dim=1) - positive).mean()


class SupConLoss(nn.Module):
    def __init__(self, temperature: float = 0.1, base_temperature: Optional[float] = None):
        super().__init__()
        self.temperature, self.base_temperature = temperature, base_temperature

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return supcon_loss(features, labels, self.temperature, self.base_temperature)


class BalancedContrastiveLoss(nn.Module):
    def __init__(self, temperature: float = 0.1):
        super().__init__()
        self.temperature = temperature

    def forward(self, features: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        return bcl_loss(features, labels, centers, self.temperature)


class PrototypicalSupConLoss(nn.Module):
    def __init__(self, temperature: float = 0.1, include_positive_in_denominator: bool = False):
        super().__init__()
        self.temperature = temperature
        self.include_positive_in_denominator = include_positive_in_denominator

    def forward(self, features: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        return psc_loss(features, labels, prototypes, self.temperature, self.include_positive_in_denominator)
