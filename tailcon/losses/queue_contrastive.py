"""Queue-based supervised contrastive losses: ResCom (Zhong et al. 2022) and DSCL + PBSD
(Xuan & Zhang 2024), as the authors implemented them (dvlab-research/Imbalanced-Learning@cc9b810 ResCom/losses.py; SY-Xuan/DSCL@79f8cef dscl/DSCL.py).

Inputs are L2-normalised already; queues are slot-major ([slots, D]) and constants (no gradient).
Under torch.distributed, ``rescom_logits`` / ``rescom_loss`` / ``dscl_loss`` gather their batch
inputs from all ranks (gradients flow back to the local shard, see :mod:`tailcon.distributed`),
so every rank computes the whole global batch's loss; with ``gather=False`` each rank contrasts
its local batch (plus the shared queue), as the authors' code does. ``pbsd_loss`` is a mean of per-sample
terms and needs no gather: the DDP average of the local means is the global mean.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn


from ..distributed import gather_no_grad, gather_with_grad, is_distributed
from .classification import effective_numbers
from .precision import compute_dtype, full_precision

Counts = Union[Sequence[int], torch.Tensor]


def _gather_two_view_rows(x: torch.Tensor, grad: bool) -> torch.Tensor:
    """[2B, ...] (view-1 rows, then view-2 rows) on each rank -> [2B_total, ...] in the same
    layout for the global batch (images in rank order)."""
    if not is_distributed():
        return x
    b = x.shape[0] // 2
    per_image = x.reshape(2, b, *x.shape[1:]).transpose(0, 1)  # [B, 2, ...]
    g = (gather_with_grad if grad else gather_no_grad)(per_image.contiguous())
    return g.transpose(0, 1).reshape(-1, *x.shape[1:])


@full_precision
def mining_counts_problem(k_pos: int, k_neg: int, num_classes: int, size_per_class: int) -> Optional[str]:
    """What is wrong with mining ``k_pos`` positives and ``k_neg`` negatives from a class-balanced
    queue of ``size_per_class`` slots per class, or None: the queue holds Q own-class slots and
    (C-1)*Q other-class ones."""
    if not 1 <= k_pos <= size_per_class:
        return f"k_pos={k_pos} must be between 1 and the queue's Q={size_per_class} slots per class"
    if not 0 <= k_neg <= (num_classes - 1) * size_per_class:
        return (f"k_neg={k_neg} exceeds the {(num_classes - 1) * size_per_class} negatives the queue holds "
                f"((C-1)*Q with C={num_classes}, Q={size_per_class})")
    return None


def rescom_logits(feat: torch.Tensor, labels: torch.Tensor, queue_keys: torch.Tensor, size_per_class: int,
                  k_pos: int, k_neg: int, gather: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """ResCom's contrastive logits with supervised hard-pair mining (ResCom/losses.py; arXiv:2203.11506).

    feat: [2B, D] unit-norm projections, view-1 rows then view-2 rows; labels: [2B];
    queue_keys: [C*Q, D] class-balanced queue (slot j of class j // Q), read before this step's
    update. Returns ``(sim, targets)``, both [2B, 2B-1+k_pos+k_neg]: raw cosine similarities
    (not divided by tau) ordered [batch block without the diagonal | the k_pos least similar
    own-class queue slots, ascending | the k_neg most similar other-class slots, descending]
    and 0/1 targets (same label; 1; 0). ``gather=False``: under DDP, this process's batch only
    (the authors' choice); True: the global batch.
    """
    num_slots = queue_keys.shape[0]
    if num_slots % size_per_class:
        raise ValueError(f"queue has {num_slots} slots, not a multiple of size_per_class={size_per_class}")
    num_classes = num_slots // size_per_class
    problem = mining_counts_problem(k_pos, k_neg, num_classes, size_per_class)
    if problem:
        raise ValueError(problem)
    if gather:
        feat, labels = _gather_two_view_rows(feat, grad=True), _gather_two_view_rows(labels, grad=False)
    n = feat.shape[0]
    off_diag = ~torch.eye(n, dtype=torch.bool, device=feat.device)
    batch_sim = (feat @ feat.t())[off_diag].view(n, n - 1)
    batch_tgt = (labels[:, None] == labels[None, :])[off_diag].view(n, n - 1)
    queue_sim = (feat @ queue_keys.detach().to(feat.dtype).t()).view(n, num_classes, size_per_class)
    own = F.one_hot(labels, num_classes).bool()  # [n, C]
    own_sim = queue_sim[own]  # [n, Q]: row i's own-class slots
    pos = torch.topk(own_sim, k_pos, dim=1, largest=False, sorted=True).values
    other = queue_sim.masked_fill(own[:, :, None], float("-inf")).view(n, -1)
    neg = torch.topk(other, k_neg, dim=1, largest=True, sorted=True).values
    sim = torch.cat([batch_sim, pos, neg], dim=1)
    targets = torch.cat([batch_tgt.to(feat.dtype), feat.new_ones(n, k_pos), feat.new_zeros(n, k_neg)], dim=1)
    return sim, targets


def effective_number_weights(cls_num_list: Counts, beta: float, like: torch.Tensor) -> torch.Tensor:
    """ResCom's class weights (ResCom/losses.py): E_c = (1 - beta^n_c) / (1 - beta), w_c = mean(E) / E_c;
    beta = 0 gives all ones. [C] in the dtype/device of ``like``."""
    eff = effective_numbers(torch.as_tensor(cls_num_list).to(like.device), beta)
    return (eff.mean() / eff).to(like.dtype)


def rescom_contrastive_rows(sim: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-row loss -sum_j t_ij log softmax_j(s_i / tau) / (sum_j t_ij + 1e-9); [rows]."""
    log_p = F.log_softmax(sim.to(compute_dtype(sim)) / temperature, dim=1)
    return -(targets * log_p).sum(dim=1) / (targets.sum(dim=1) + 1e-9)


@full_precision
def rescom_loss(sim: torch.Tensor, targets: torch.Tensor, logits_cls: torch.Tensor, labels: torch.Tensor,
                cls_num_list: Counts, temperature: float, effective_num_beta: float,
                con_weight: float, gather: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ResCom's objective (ResCom/losses.py, ResCom/rescom/builder.py): ``(loss_cls, loss_con, loss)``.

    sim, targets: [2B', W] from :func:`rescom_logits` (2B' = global rows under DDP);
    logits_cls: [2B, C] raw classifier logits of both views; labels: [2B].
    loss_cls = mean CE(o + log(pi + 1e-9), y) over both views (Siamese balanced softmax);
    loss_con = mean_i w_{y_i} * row_i with effective-number weights; loss = loss_cls + con_weight * loss_con.
    """
    if gather:  # as rescom_logits was called
        logits_cls = _gather_two_view_rows(logits_cls, grad=True)
        labels = _gather_two_view_rows(labels, grad=False)
    n = torch.as_tensor(cls_num_list, device=logits_cls.device).to(torch.float64)
    prior = (n / n.sum()).to(logits_cls.dtype)
    loss_cls = F.cross_entropy(logits_cls + torch.log(prior + 1e-9), labels)
    rows = rescom_contrastive_rows(sim, targets, temperature)
    weights = effective_number_weights(cls_num_list, effective_num_beta, rows)
    loss_con = (weights[labels] * rows).mean()
    return loss_cls, loss_con, loss_cls + con_weight * loss_con


@full_precision
def dscl_terms(q: torch.Tensor, k: torch.Tensor, queue_keys: torch.Tensor, queue_labels: torch.Tensor,
               labels: torch.Tensor, temperature: float, weighted_beta: float, gather: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DSCL loss with its details: ``(loss, rows [B], target_weights [B, 2B+K])``; see :func:`dscl_loss`."""
    if gather:
        q, k = gather_with_grad(q), gather_no_grad(k.detach())
        labels = gather_no_grad(labels)
    dtype = compute_dtype(q)
    q = q.to(dtype)
    b = q.shape[0]
    contrast = torch.cat([q, k.to(dtype), queue_keys.detach().to(dtype)], dim=0)  # [2B + K, D]
    contrast_lab = torch.cat([labels, labels, queue_labels.to(labels.dtype)])
    logits = q @ contrast.t() / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    cols = torch.arange(contrast.shape[0], device=q.device)
    rows_idx = torch.arange(b, device=q.device)
    self_mask = cols[None, :] == rows_idx[:, None]
    valid = (contrast_lab >= 0)[None, :] & ~self_mask  # empty queue slots (label -1) take no part
    log_denom = torch.log((torch.exp(logits) * valid).sum(dim=1, keepdim=True) + 1e-12)
    log_prob = logits - log_denom
    pos = (contrast_lab[None, :] == labels[:, None]) & valid
    own_key = cols[None, :] == (rows_idx[:, None] + b)
    n_other = (pos.sum(dim=1, keepdim=True) - 1).to(dtype)
    omega = torch.where(own_key, torch.ones_like(logits), weighted_beta / (n_other + 1e-12)) * pos
    norm = omega.sum(dim=1, keepdim=True)
    rows = -(omega * log_prob).sum(dim=1) / norm.squeeze(1)
    return rows.mean(), rows, omega / norm


def dscl_loss(q: torch.Tensor, k: torch.Tensor, queue_keys: torch.Tensor, queue_labels: torch.Tensor,
              labels: torch.Tensor, temperature: float, weighted_beta: float, gather: bool = True) -> torch.Tensor:
    """Decoupled supervised contrastive loss (SY-Xuan/DSCL@79f8cef dscl/DSCL.py; arXiv:2403.06151), the authors' beta form.

    q: [B, D] online projections of view 1 (the anchors); k: [B, D] momentum-encoder keys of view 2
    (constants); queue_keys: [K, D]; queue_labels: [K] (label < 0 marks an empty slot, ignored);
    labels: [B]. Contrast set [q, k, queue] without the anchor itself; the own key gets weight 1,
    each of the n other positives beta / n (target mass 1/(1+beta) on the own view when n > 0).
    Returns the mean over the B anchors. ``gather=False``: under DDP, this process's q and k only
    (with the shared queue; the authors' choice); True: the global batch.
    """
    return dscl_terms(q, k, queue_keys, queue_labels, labels, temperature, weighted_beta, gather)[0]


@full_precision
def pbsd_terms(roi_features: torch.Tensor, small_q: torch.Tensor, k: torch.Tensor, queue_keys: torch.Tensor,
               temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, teacher distributions [L, B, 1+K])``; see :func:`pbsd_loss`."""
    dtype = compute_dtype(small_q)

    def logits(x: torch.Tensor) -> torch.Tensor:  # [L, B, 1 + K]
        x = x.to(dtype)
        own = (x * k.detach().to(dtype)[None]).sum(-1, keepdim=True)
        return torch.cat([own, x @ queue_keys.detach().to(dtype).t()], dim=-1) / temperature

    teacher = F.softmax(logits(roi_features.detach()), dim=-1)
    loss = -(teacher * F.log_softmax(logits(small_q), dim=-1)).sum(-1).mean()
    return loss, teacher


def pbsd_loss(roi_features: torch.Tensor, small_q: torch.Tensor, k: torch.Tensor, queue_keys: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """Patch-based self-distillation (SY-Xuan/DSCL@79f8cef dscl/DSCL.py).

    roi_features: [L, B, D] teacher features (ROI-pooled patch features of the global view,
    projected, normalised; detached here); small_q: [L, B, D] student features of the cropped
    patch images; k: [B, D] own keys; queue_keys: [K, D]. With P(x) = softmax([<x, k_b>,
    <x, m_1..K>] / tau), returns mean over (l, b) of CE(P(teacher), P(student)).
    """
    return pbsd_terms(roi_features, small_q, k, queue_keys, temperature)[0]


class DSCLLoss(nn.Module):
    def __init__(self, temperature: float = 0.07, weighted_beta: float = 8.0, gather: bool = True):
        super().__init__()
        self.temperature, self.weighted_beta, self.gather = temperature, weighted_beta, gather

    def forward(self, q, k, queue_keys, queue_labels, labels):
        return dscl_loss(q, k, queue_keys, queue_labels, labels, self.temperature, self.weighted_beta,
                         gather=self.gather)


class PBSDLoss(nn.Module):
    def __init__(self, temperature: float = 0.07):
        super().__init__()
        self.temperature = temperature

    def forward(self, roi_features, small_q, k, queue_keys):
        return pbsd_loss(roi_features, small_q, k, queue_keys, self.temperature)
