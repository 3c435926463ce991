"""Classification losses for long-tailed training: CE, logit-adjusted CE, balanced softmax,
class-balanced (effective-number) CE."""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

Counts = Union[Sequence[int], torch.Tensor]


def log_prior(cls_num_list: Counts, like: torch.Tensor) -> torch.Tensor:
    """log(n_c / sum n) as a [C] tensor with the dtype and device of ``like``."""
    n = torch.as_tensor(cls_num_list, device=like.device).to(like.dtype)
    return torch.log(n / n.sum())


def logit_adjusted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, cls_num_list: Counts,
                                 tau: float = 1.0) -> torch.Tensor:
    """Mean over the batch of CE(logits + tau * log(pi), labels) (Menon et al., ICLR 2021, arXiv:2007.07314; BCL's loss/logitadjust.py).

    logits [B, C] raw classifier outputs; labels [B]; cls_num_list [C] training counts.
    The adjustment belongs to training only: predict with the raw logits.
    """
    return F.cross_entropy(logits + tau * log_prior(cls_num_list, logits), labels)


def balanced_softmax_loss(logits: torch.Tensor, labels: torch.Tensor, cls_num_list: Counts) -> torch.Tensor:
    """Balanced Softmax (Ren et al. 2020): CE(logits + log n_c). Same optimum as logit
    adjustment with tau = 1 (log n_c and log pi_c differ by a constant per row).
    logits [B, C], labels [B]."""
    n = torch.as_tensor(cls_num_list, device=logits.device).to(logits.dtype)
    return F.cross_entropy(logits + torch.log(n), labels)


def effective_numbers(cls_num_list: Counts, beta: float) -> torch.Tensor:
    """E_c = (1 - beta^n_c) / (1 - beta) (Cui et al. 2019), float64 [C]; all ones for beta = 0."""
    n = torch.as_tensor(cls_num_list).to(torch.float64)
    if beta == 0:
        return torch.ones_like(n)
    return (1.0 - torch.pow(torch.full_like(n, beta), n)) / (1.0 - beta)


def class_balanced_weights(cls_num_list: Counts, beta: float = 0.9999) -> torch.Tensor:
    """Effective-number weights (Cui et al. 2019): w_c proportional to 1 / E_c, normalised to
    sum to C. Returns a float64 [C] tensor."""
    w = 1.0 / effective_numbers(cls_num_list, beta)
    return w * len(w) / w.sum()


def class_balanced_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted CE normalised by the summed weights of the batch (PyTorch's weighted mean).
    logits [B, C], labels [B], weights [C]."""
    return F.cross_entropy(logits, labels, weight=weights.to(device=logits.device, dtype=logits.dtype))


def ldam_margins(cls_num_list: Counts, max_margin: float = 0.5) -> torch.Tensor:
    """LDAM's per-class margins (Cao et al. 2019): m_c proportional to n_c^(-1/4), the largest
    (rarest class) equal to ``max_margin``. float64 [C]."""
    m = torch.as_tensor(cls_num_list).to(torch.float64).pow(-0.25)
    return m * (max_margin / m.max())


def ldam_loss(logits: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor, scale: float,
              weights: torch.Tensor | None = None) -> torch.Tensor:
    """LDAM loss on the logits of a cosine classifier ``s * cos`` (logits [B, C], labels [B]):
    weighted CE of ``s * (cos - m_y)`` at the true class, i.e. the true-class logit lowered by
    ``scale * margins[y]`` (margins [C] from :func:`ldam_margins`, in cosine units). ``weights``
    [C]: DRW's class weights (PyTorch's weighted mean), None: unweighted."""
    shift = (scale * margins.to(device=logits.device, dtype=logits.dtype))[labels]
    adjusted = logits - F.one_hot(labels, logits.shape[1]).to(logits.dtype) * shift[:, None]
    w = None if weights is None else weights.to(device=logits.device, dtype=logits.dtype)
    return F.cross_entropy(adjusted, labels, weight=w)


class _WithCounts(nn.Module):
    """Keeps the class counts as a buffer, so they follow the module's device (no per-step copy)."""

    def __init__(self, cls_num_list: Counts):
        super().__init__()
        self.register_buffer("cls_num", torch.as_tensor(cls_num_list, dtype=torch.float64), persistent=False)


class LogitAdjustedCrossEntropy(_WithCounts):
    def __init__(self, cls_num_list: Counts, tau: float = 1.0):
        super().__init__(cls_num_list)
        self.tau = tau

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return logit_adjusted_cross_entropy(logits, labels, self.cls_num, self.tau)


class BalancedSoftmaxLoss(_WithCounts):
    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return balanced_softmax_loss(logits, labels, self.cls_num)


class ClassBalancedCrossEntropy(nn.Module):
    def __init__(self, cls_num_list: Counts, beta: float = 0.9999):
        super().__init__()
        self.register_buffer("weights", class_balanced_weights(cls_num_list, beta), persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return class_balanced_cross_entropy(logits, labels, self.weights)


class LDAMLoss(nn.Module):
    """:func:`ldam_loss` with deferred re-weighting: ``weights`` start uniform and
    :meth:`set_reweighting` switches them to effective-number weights (DRW)."""

    def __init__(self, cls_num_list: Counts, max_margin: float = 0.5, scale: float = 30.0):
        super().__init__()
        self.scale = scale
        self.register_buffer("margins", ldam_margins(cls_num_list, max_margin), persistent=False)
        self.register_buffer("cls_num", torch.as_tensor(cls_num_list, dtype=torch.float64), persistent=False)
        self.register_buffer("weights", torch.ones(len(self.cls_num), dtype=torch.float64), persistent=False)

    def set_reweighting(self, beta: float) -> None:
        """Effective-number weights with ``beta`` (0: uniform), in place on the buffer's device."""
        self.weights.copy_(class_balanced_weights(self.cls_num.cpu(), beta))

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return ldam_loss(logits, labels, self.margins, self.scale, self.weights)


class CrossEntropy(nn.Module):
    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
