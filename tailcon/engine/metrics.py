"""Top-1 and Many / Medium / Few accuracy (spec 1.7)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

MANY_THRESHOLD = 100  # Many: more than 100 training images
FEW_THRESHOLD = 20  # Few: fewer than 20; Medium: 20..100 inclusive


def shot_groups(train_counts: Sequence[int]) -> dict[str, np.ndarray]:
    """Boolean masks [C] of the Many (>100), Medium (20-100) and Few (<20) classes."""
    n = np.asarray(train_counts)
    return {"many": n > MANY_THRESHOLD, "medium": (n >= FEW_THRESHOLD) & (n <= MANY_THRESHOLD),
            "few": n < FEW_THRESHOLD}


def per_class_accuracy(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Accuracy of each class [C] (float64); NaN for a class absent from ``labels``."""
    labels = labels.long().cpu()
    correct = (preds.long().cpu() == labels).double()
    hits = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, correct)
    total = torch.bincount(labels, minlength=num_classes).double()
    return torch.where(total > 0, hits / total.clamp_min(1), torch.full_like(total, float("nan")))


def shot_accuracy(preds: torch.Tensor, labels: torch.Tensor, train_counts: Sequence[int]) -> dict[str, Any]:
    """Overall top-1 (instance accuracy) and the unweighted mean per-class accuracy of each shot
    group, in percent. A group with no class present in ``labels`` is ``None`` (empty), not 0:
    CIFAR-10-LT has no Few class. Also returns ``per_class`` (None for absent classes) and the
    number of classes in each group."""
    num_classes = len(train_counts)
    acc = per_class_accuracy(preds, labels, num_classes).numpy()
    present = ~np.isnan(acc)
    out: dict[str, Any] = {
        "top1": float((preds.long().cpu() == labels.long().cpu()).double().mean() * 100) if len(labels) else None,
        "num_images": int(len(labels)),
    }
    for group, mask in shot_groups(train_counts).items():
        sel = mask & present
        out[group] = float(acc[sel].mean() * 100) if sel.any() else None
        out[f"num_{group}_classes"] = int(sel.sum())
    out["per_class"] = [None if np.isnan(a) else float(a * 100) for a in acc]
    out["train_counts"] = [int(n) for n in train_counts]
    return out


def format_pct(value: Optional[float]) -> str:
    return "empty" if value is None else f"{value:.2f}"


def format_report(rows: list[tuple[str, dict]], title: str = "") -> str:
    """A fixed-width table: one row per (label, metrics)."""
    head = f"{'':32s} {'top1':>7s} {'many':>7s} {'medium':>7s} {'few':>7s}"
    lines = [title] if title else []
    lines.append(head)
    for label, m in rows:
        lines.append(f"{label:32s} " + " ".join(f"{format_pct(m.get(k)):>7s}" for k in ("top1", "many", "medium", "few")))
    if rows:
        m = rows[0][1]
        lines.append(f"{'(classes per group)':32s} {'':>7s} " + " ".join(
            f"{m.get(f'num_{g}_classes', 0):>7d}" for g in ("many", "medium", "few")))
    return "\n".join(lines)
