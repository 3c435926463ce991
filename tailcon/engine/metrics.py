"""Top-1 and Many / Medium / Few accuracy (Many > 100, Medium 20-100, Few < 20 training images, as the long-tail papers report), top-5 accuracy and expected calibration error."""

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


ECE_BINS = 15  # equal-width confidence bins, the usual choice (Guo et al. 2017)


def reliability(confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS) -> dict[str, list]:
    """Per equal-width confidence bin: images, accuracy and mean confidence (None when empty)."""
    conf = confidence.double().cpu()
    hit = correct.double().cpu()
    index = (conf * bins).long().clamp(0, bins - 1)  # a confidence of exactly 1 falls in the last bin
    count = torch.bincount(index, minlength=bins).double()
    acc = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, hit)
    mean_conf = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, conf)
    nonempty = count > 0
    return {"count": [int(c) for c in count],
            "accuracy": [float(a / c) if n else None for a, c, n in zip(acc, count, nonempty)],
            "confidence": [float(m / c) if n else None for m, c, n in zip(mean_conf, count, nonempty)]}


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS) -> Optional[float]:
    """ECE in percent: sum over bins of |bin| / N x |accuracy - mean confidence|; None without images."""
    if len(confidence) == 0:
        return None
    r = reliability(confidence, correct, bins)
    n = sum(r["count"])
    return 100 * sum(c / n * abs(a - m) for c, a, m in zip(r["count"], r["accuracy"], r["confidence"]) if c)


def evaluation_metrics(pred, train_counts: Sequence[int]) -> dict[str, Any]:
    """:func:`shot_accuracy` of ``pred`` (:class:`tailcon.engine.evaluation.Predictions`), plus
    ``top5`` (percent; top-k accuracy with k = number of classes when there are fewer than 5) and
    ``ece``: expected calibration error in percent (confidence = softmax probability of the
    predicted class, 15 bins) over all images (``overall``) and over the images of each group's
    classes (None for an empty group), and ``reliability``, the overall bins behind it."""
    labels = pred.labels.long().cpu()
    out = shot_accuracy(pred.classes, labels, train_counts)
    correct = pred.classes.long().cpu() == labels
    out["top5"] = float((pred.top.long().cpu() == labels[:, None]).any(dim=1).double().mean() * 100) if len(labels) else None
    ece = {"overall": expected_calibration_error(pred.confidence, correct)}
    for group, mask in shot_groups(train_counts).items():
        in_group = torch.as_tensor(mask)[labels] if len(labels) else torch.zeros(0, dtype=torch.bool)
        ece[group] = expected_calibration_error(pred.confidence[in_group], correct[in_group])
    out["ece"] = ece
    out["reliability"] = reliability(pred.confidence, correct)
    return out


def format_pct(value: Optional[float]) -> str:
    return "empty" if value is None else f"{value:.2f}"


def counted(n: int, noun: str, plural: Optional[str] = None) -> str:
    """``1 epoch``, ``2 epochs``, ``3 classes`` (``plural`` for an irregular one): a count with its
    noun in the right number."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def format_report(rows: list[tuple[str, dict]], title: str = "") -> str:
    """A fixed-width table: one row per (label, metrics)."""
    extra = [k for k in ("top5", "ece") if any(k in m for _, m in rows)]
    head = f"{'':32s} {'top1':>7s} {'many':>7s} {'medium':>7s} {'few':>7s}" + "".join(f" {k:>7s}" for k in extra)
    lines = [title] if title else []
    lines.append(head)
    for label, m in rows:
        cells = [format_pct(m.get(k)) for k in ("top1", "many", "medium", "few")]
        # top-5 / ECE missing: a record from before they were computed ("-"), not an empty group
        cells += ["-" if v is None else format_pct(v)
                  for v in ((m.get("ece") or {}).get("overall") if k == "ece" else m.get(k) for k in extra)]
        lines.append(f"{label:32s} " + " ".join(f"{c:>7s}" for c in cells))
    if rows:
        m = rows[0][1]
        lines.append(f"{'(classes per group)':32s} {'':>7s} " + " ".join(
            f"{m.get(f'num_{g}_classes', 0):>7d}" for g in ("many", "medium", "few")))
    return "\n".join(lines)
