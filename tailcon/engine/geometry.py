"""What a method did to the feature space: the geometry the long-tail papers argue about.

Pure functions on feature tensors (``tailcon analyze`` feeds them a run's backbone features):

* :func:`class_mean_geometry`: cosines of the centred class means and their distance from a
  regular simplex (all off-diagonal cosines -1/(C-1)); BCL argues tail classes collapse without it.
* :func:`within_between_variability`: neural collapse NC1, tr(Sw Sb^+) / C (0 when every class
  has collapsed onto its mean).
* :func:`alignment_uniformity`: Wang & Isola (2020) on normalised features, with same-class pairs
  as positives: alignment E ||f(x) - f(y)||^2, uniformity log E exp(-2 ||f(x) - f(y)||^2).
* per-class feature norms and classifier weight norms against training counts (decoupling: the
  norms follow class size).
* :func:`knn_predict`: weighted kNN classes of the features (the kNN monitor's and analyze's).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import shot_groups


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[C, D] mean feature of each class (zeros for a class without samples)."""
    onehot = F.one_hot(labels.long(), num_classes).to(features.dtype)  # [N, C]
    counts = onehot.sum(0).clamp_min(1)
    return (onehot.t() @ features) / counts[:, None]


def class_mean_geometry(means: torch.Tensor) -> dict[str, Any]:
    """Cosines [C, C] of the class means centred on their global mean, and per class the mean
    absolute gap of its off-diagonal cosines from -1/(C-1) (0: a regular simplex)."""
    c = means.shape[0]
    centred = F.normalize(means - means.mean(0, keepdim=True), dim=1)
    cos = centred @ centred.t()
    off = ~torch.eye(c, dtype=torch.bool)
    gap = (cos - (-1.0 / (c - 1))).abs().masked_fill(~off, 0)
    return {"cosine": cos, "simplex_gap_per_class": gap.sum(1) / (c - 1),
            "simplex_distance": float(gap.sum() / (c * (c - 1)))}


def within_between_variability(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """NC1 = tr(Sw Sb^+) / C: within-class covariance against the pseudo-inverse of the
    between-class covariance of the class means (Papyan et al. 2020)."""
    x = features.double()
    means = class_means(x, labels, num_classes)
    centred_means = means - x.mean(0, keepdim=True)
    within = x - means[labels.long()]
    sw = within.t() @ within / x.shape[0]
    sb = centred_means.t() @ centred_means / num_classes
    return float(torch.trace(sw @ torch.linalg.pinv(sb, hermitian=True)) / num_classes)


def alignment_uniformity(features: torch.Tensor, labels: torch.Tensor, max_points: int = 2000,
                         seed: int = 0) -> dict[str, float]:
    """Wang & Isola's alignment (same-class pairs) and uniformity of the normalised features,
    over at most ``max_points`` samples (a seeded subset: the pairs grow quadratically)."""
    if features.shape[0] > max_points:
        keep = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(seed))[:max_points]
        features, labels = features[keep], labels[keep]
    z = F.normalize(features.double(), dim=1)
    sq = torch.cdist(z, z).pow(2)
    pair = ~torch.eye(z.shape[0], dtype=torch.bool)
    same = (labels[:, None] == labels[None, :]) & pair
    return {"alignment": float(sq[same].mean()) if same.any() else float("nan"),
            "uniformity": float(torch.logsumexp(-2 * sq[pair], 0) - np.log(int(pair.sum())))}


def knn_predict(query: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int, k: int = 20,
                temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Weighted kNN classes [Q] of ``query`` [Q, D] against ``bank`` [N, D] with ``bank_labels``
    [N]: cosine similarities, the k nearest vote exp(sim / temperature) each. In chunks of queries."""
    bank = torch.nn.functional.normalize(bank.float(), dim=1)
    preds = []
    for q in torch.nn.functional.normalize(query.float(), dim=1).split(chunk):
        sim, idx = (q @ bank.t()).topk(min(k, bank.shape[0]), dim=1)
        votes = torch.zeros(q.shape[0], num_classes).scatter_add_(1, bank_labels[idx].long(), (sim / temperature).exp())
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def per_group(values: Sequence[float], train_counts: Sequence[int]) -> dict[str, float | None]:
    """Mean of a per-class value over the Many / Medium / Few classes (None for an empty group)."""
    v = np.asarray(values, dtype=float)
    return {g: (float(np.nanmean(v[mask])) if mask.any() else None) for g, mask in shot_groups(train_counts).items()}
