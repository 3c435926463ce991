"""tau-normalisation of a trained linear classifier (Kang et al., "Decoupling Representation and
Classifier for Long-Tailed Recognition", ICLR 2020, Sec. 4): ``tailcon eval --tau-norm``."""

from __future__ import annotations

from typing import Optional

import torch

from ..config import ConfigError
from ..data import build_eval_transform
from ..engine.evaluation import TOP_K, Predictions, predict_dataset
from ..engine.metrics import evaluation_metrics
from ..methods import Method

MAX_TAU = 10.0  # ||w||^tau beyond this only amplifies norm noise (the search spans 0..2)
TAU_GRID = tuple(round(0.1 * i, 1) for i in range(21))  # tau-normalisation search: 0, 0.1, ..., 2


def parse_tau(text: Optional[str]) -> Optional[float | str]:
    """``--tau-norm``: None (off), ``"auto"``, or a number in [0, :data:`MAX_TAU`]."""
    if text is None or text == "auto":
        return text
    try:
        tau = float(text)
    except ValueError:
        tau = float("nan")
    if not 0 <= tau <= MAX_TAU:  # NaN fails this too
        raise ConfigError(f"--tau-norm takes a number in [0, {MAX_TAU:g}] or 'auto', got {text!r}")
    return tau


def tau_normalized_logits(features: torch.Tensor, classifier: torch.nn.Module, tau: float) -> torch.Tensor:
    """Logits [N, C] of ``features`` [N, F] with each class's weight vector divided by its norm
    to the power ``tau`` (Kang et al. 2020): tau = 0 is the trained classifier without its bias,
    tau = 1 gives every class the same weight norm. The bias is dropped: it would bring back the
    head-class offset that the rescaling removes."""
    w = classifier.weight.detach().float().cpu()
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12).pow(tau)
    return features.float().cpu() @ w.t()


def _from_logits(logits: torch.Tensor, labels: torch.Tensor) -> Predictions:
    top = logits.topk(min(TOP_K, logits.shape[1]), dim=1).indices
    return Predictions(top, logits.softmax(dim=1).gather(1, top[:, :1]).squeeze(1), labels)


def tau_norm_metrics(method: Method, data, cfg, device, split: str, tau_norm: str | float, counts) -> tuple[dict, dict]:
    """(metrics of the tau-normalised classifier on ``split``, what was chosen and how)."""
    if not isinstance(method.classifier, torch.nn.Linear):
        raise ConfigError("--tau-norm rescales the weight norms of a linear classifier; this run's classifier is "
                            f"{type(method.classifier).__name__} (model.classifier={cfg['model']['classifier']}), "
                            "whose class vectors are normalised already")
    feats = {}

    def features(which: str) -> Predictions:
        if which not in feats:
            dataset = data.val if which == "val" else data.test
            dataset.transform = build_eval_transform(data.info)
            feats[which] = predict_dataset(method, dataset, cfg, device, desc=which, info=data.info, keep_features=True)
        return feats[which]

    if tau_norm == "auto":
        on = "val" if data.val is not None else "test"
        pred = features(on)
        grid = {tau: float((tau_normalized_logits(pred.features, method.classifier, tau).argmax(1) == pred.labels)
                           .double().mean() * 100) for tau in TAU_GRID}
        tau = max(grid, key=lambda t: (grid[t], -t))  # the smallest tau among the best
        chosen = {"tau": tau, "selected_on": on, "grid_top1": {str(t): v for t, v in grid.items()}}
    else:
        tau = float(tau_norm)
        chosen = {"tau": tau, "selected_on": "given"}
    pred = features(split)
    logits = tau_normalized_logits(pred.features, method.classifier, tau)
    return evaluation_metrics(_from_logits(logits, pred.labels), counts), chosen


