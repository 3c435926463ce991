"""``tailcon analyze RUN [RUN...]``: the feature geometry of trained runs, side by side.

One pass of each run's backbone over its training split (test-time transform) and its test split
gives every figure (:mod:`tailcon.engine.geometry`), per Many / Medium / Few where it is per class:
class-mean geometry and its distance from a regular simplex, NC1 within/between variability,
feature and classifier-weight norms against training counts, alignment and uniformity, and kNN
top-1 on the backbone features. Written to ``OUT/analysis.json`` with figures in the style of
``tailcon report``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..data import DataError, build_data, build_eval_transform
from ..engine import geometry
from ..engine.evaluation import predict_dataset
from ..engine.metrics import shot_accuracy
from ..rundir import atomic_write_text


@torch.no_grad()
def analyze_run(run_dir: str | os.PathLike, device: Optional[str] = None, max_points: int = 2000) -> dict[str, Any]:
    """The geometry figures of one run (its final checkpoint)."""
    from ..inference import load

    predictor = load(run_dir, device=device)
    cfg, method = predictor.config, predictor.model
    data = build_data(cfg)
    if [str(c) for c in data.classes] != predictor.classes:  # the class ids must mean what the model learned
        raise DataError(f"{run_dir}: the data at data.root has other classes than the run trained on "
                        f"({data.classes[:5]}... vs {predictor.classes[:5]}...): point data.root at the run's data")
    transform = build_eval_transform(data.info)
    data.train.transform = data.test.transform = transform
    dev = predictor.device
    train = predict_dataset(method, data.train, cfg, dev, desc="analyze train", info=data.info, keep_features=True)
    test = predict_dataset(method, data.test, cfg, dev, desc="analyze test", info=data.info, keep_features=True)
    counts = [int(n) for n in method.cls_num.tolist()]
    c = len(counts)
    geo = geometry.class_mean_geometry(geometry.class_means(train.features.double(), train.labels, c))
    feature_norms = geometry.class_means(test.features.double().norm(dim=1, keepdim=True), test.labels, c)[:, 0]
    present = torch.bincount(test.labels.long(), minlength=c) > 0
    feature_norms = [float(v) if p else None for v, p in zip(feature_norms, present)]
    weights = getattr(method.classifier, "class_vectors", None)
    weight_norms = [float(v) for v in weights().detach().float().norm(dim=1)] if weights else None
    knn = shot_accuracy(geometry.knn_predict(test.features, train.features, train.labels, c), test.labels, counts)
    gaps = [float(v) for v in geo["simplex_gap_per_class"]]
    return {
        "run": str(run_dir), "method": cfg["method"]["name"], "classes": predictor.classes, "train_counts": counts,
        "simplex_distance": geo["simplex_distance"], "simplex_gap": geometry.per_group(gaps, counts),
        "simplex_gap_per_class": gaps, "mean_cosine": geo["cosine"].tolist(),
        "nc1": {"train": geometry.within_between_variability(train.features, train.labels, c),
                "test": geometry.within_between_variability(test.features, test.labels, c)},
        "feature_norm": geometry.per_group([np.nan if v is None else v for v in feature_norms], counts),
        "feature_norm_per_class": feature_norms,
        "weight_norm": geometry.per_group(weight_norms, counts) if weight_norms else None,
        "weight_norm_per_class": weight_norms,
        **geometry.alignment_uniformity(test.features, test.labels, max_points=max_points),
        "knn_top1": {g: knn[g] for g in ("top1", "many", "medium", "few")},
    }


def write_analysis(run_dirs: Sequence[str], out: str | os.PathLike, device: Optional[str] = None) -> Path:
    """Analyse every run; write ``OUT/analysis.json`` and the figures; print a summary table."""
    import json

    from .report import run_labels, load_run, say

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = run_labels([load_run(d) for d in run_dirs])
    results = {}
    for label, run in zip(labels, run_dirs):
        say(f"tailcon analyze: {run}: one pass over its training and test splits")
        results[label] = analyze_run(run, device=device)
    atomic_write_text(out / "analysis.json", json.dumps(results, indent=1))
    _plot(results, out)
    print(format_analysis(results))
    return out / "analysis.json"


def format_analysis(results: dict[str, dict]) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    head = f"{'run':28s} {'simplex':>8s} {'NC1 tr':>8s} {'align':>7s} {'unif':>7s} {'kNN':>7s}  kNN many/med/few"
    legend = ("simplex: distance of the class means from a regular simplex (lower: closer); NC1 tr: within- over "
              "between-class variability, training split (lower: more collapsed); align: distance of same-class "
              "pairs (lower: tighter); unif: uniformity (lower: more spread); kNN: top-1 % (higher: better)")
    lines = [legend, head]
    for label, r in results.items():
        k = r["knn_top1"]
        lines.append(f"{label[:28]:28s} {fmt(r['simplex_distance']):>8s} {fmt(r['nc1']['train']):>8s} "
                     f"{fmt(r['alignment']):>7s} {fmt(r['uniformity']):>7s} {fmt(k['top1']):>7s}  "
                     f"{fmt(k['many'])} / {fmt(k['medium'])} / {fmt(k['few'])}")
    return "\n".join(lines)


def _plot(results: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), squeeze=False)
    for ax, (label, r) in zip(axes[0], results.items()):
        order = np.argsort(-np.asarray(r["train_counts"]), kind="stable")  # head classes first
        cos = np.asarray(r["mean_cosine"])[np.ix_(order, order)]
        im = ax.imshow(cos, vmin=-1, vmax=1, cmap="coolwarm")
        ax.set_title(f"{label}\nsimplex distance {r['simplex_distance']:.3f}", fontsize=9)
        ax.set_xlabel("class (most training images first)")
        if len(order) <= 30:  # names fit: label the classes by name
            names = [str(r["classes"][i]) if r.get("classes") else str(i) for i in order]
            ax.set_xticks(range(len(order)))
            ax.set_xticklabels(names, rotation=90, fontsize=6)
            ax.set_yticks(range(len(order)))
            ax.set_yticklabels(names, fontsize=6)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="cosine of centred class means")
    fig.savefig(out / "class_mean_cosines.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, r in results.items():
        counts = np.asarray(r["train_counts"], dtype=float)
        feats = np.asarray([np.nan if v is None else v for v in r["feature_norm_per_class"]])
        axes[0].scatter(counts, feats, s=12, label=label)
        if r["weight_norm_per_class"]:
            axes[1].scatter(counts, r["weight_norm_per_class"], s=12, label=label)
    for ax, what in zip(axes, ("mean feature norm (test images)", "classifier weight norm")):
        ax.set_xscale("log")
        ax.set_xlabel("training images of the class")
        ax.set_ylabel(what)
        ax.legend(fontsize=8)
    fig.savefig(out / "norms_vs_counts.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
