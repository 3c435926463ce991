"""``tailcon report RUN_DIR...``: figures and a Markdown page for one or more runs.

Figures (PNG): per-class accuracy against per-class training count (log scale), Many / Medium /
Few bars per run, training curves (losses, learning rate, accuracy), a reliability diagram
(calibration), and, from the test set
predicted again with each run's final checkpoint, a confusion matrix (at most 20 classes) and a
2-D t-SNE of test features coloured by the class's head/tail group.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .. import config
from ..engine.logging import read_metrics
from ..engine.metrics import FEW_THRESHOLD, MANY_THRESHOLD, format_pct, shot_groups
from ..rundir import RunDir
from ..defaults import REPORT_TSNE_POINTS
from .compare import recalled

GROUP_COLOURS = {"many": "#1f77b4", "medium": "#ff7f0e", "few": "#d62728"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What training wrote: results.json (final epoch, best epoch) and every stage's metrics."""
    run = RunDir(run_dir)
    results = run.read_results()
    if results is None:
        raise FileNotFoundError(f"{run.path}: no results.json: the run has not finished (continue it with "
                                f"`tailcon train resume={run.path}`)")
    curves = []
    for i, stage in enumerate(run.stage_dirs()):
        for record in read_metrics(stage.path):
            curves.append({**record, "stage": stage.path.name if stage.path != run.path else "", "stage_index": i})
    method = config.load_yaml(run.config).get("method", {}).get("name", "") if run.config.is_file() else ""
    return {"dir": run.path, "name": run.path.name if run.path.name else str(run.path), "results": results,
            "curves": curves, "method": method}


_SEPARATORS = "-/_"


def _strip_shared(labels: list[str]) -> list[str]:
    """Drop the prefix and suffix every label shares, cut at a separator (``-``, ``/``, ``_``).

    ``cifar10_lt-bcl/seed0`` and ``cifar10_lt-ce/seed0`` become ``bcl`` and ``ce``: in a legend of
    eleven runs the shared parts only push the distinguishing ones out of sight.
    """
    if len(labels) < 2:
        return labels
    prefix = os.path.commonprefix(labels)
    cut = max(prefix.rfind(c) for c in _SEPARATORS) + 1
    rev = [label[::-1] for label in labels]
    suffix = os.path.commonprefix(rev)
    end = max(suffix.rfind(c) for c in _SEPARATORS) + 1
    stripped = [label[cut:len(label) - end] for label in labels]
    if any(not label for label in stripped) or len(set(stripped)) < len(set(labels)):
        return labels
    return stripped


def run_labels(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The runs' names in tables and legends: unique among ``runs``, without their shared parts.

    A run directory named ``seedN`` (or one whose name another run shares) is named with its parent.
    """
    names = [r["name"] for r in runs]
    full = [f"{r['dir'].parent.name}/{r['name']}" if names.count(r["name"]) > 1 or r["name"].startswith("seed")
            else r["name"] for r in runs]
    return _strip_shared(full)


def _colours(n: int) -> list:
    """``n`` distinguishable colours: matplotlib's default cycle repeats after 10 runs."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](i / (n - 1)) for i in range(n)]


# ---- figures from the logged results ---------------------------------------------------------
def plot_per_class(runs, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run, colour in zip(runs, _colours(len(runs))):
        res = run["results"]
        counts = np.asarray(res["train_counts"], dtype=float)
        acc = np.asarray([np.nan if a is None else a for a in res["per_class"]], dtype=float)
        order = np.argsort(-counts)
        ax.plot(counts[order], acc[order], marker="o", ms=3, lw=1, color=colour, label=run["label"])
    for x in (FEW_THRESHOLD, MANY_THRESHOLD):
        ax.axvline(x, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("test accuracy of the class (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("Per-class accuracy against class size (dotted: Few | Medium | Many bounds)")
    if len(runs) <= 6:
        ax.legend(fontsize=8)
    else:  # outside the axes: inside, a dozen entries hide the lines they name
        fig.set_size_inches(9, 4.2)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_shot_bars(runs, path: Path) -> None:
    plt = _plt()
    names = {"top1": "overall", "many": f"Many (>{MANY_THRESHOLD})",
             "medium": f"Medium ({FEW_THRESHOLD}-{MANY_THRESHOLD})", "few": f"Few (<{FEW_THRESHOLD})"}
    # A group no run has a class in (Few on CIFAR-10-LT) gets no empty slot, only a note.
    empty = [g for g in ("many", "medium", "few") if all(r["results"].get(g) is None for r in runs)]
    groups = [g for g in names if g not in empty]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(runs) * len(groups) + 3.5), 4))
    width = 0.8 / len(runs)
    for i, (run, colour) in enumerate(zip(runs, _colours(len(runs)))):
        vals = [run["results"].get(g) for g in groups]
        xs = np.arange(len(groups)) + (i - (len(runs) - 1) / 2) * width
        bars = ax.bar(xs, [np.nan if v is None else v for v in vals], width, color=colour, label=run["label"])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, (v or 0) + 1, "empty" if v is None else f"{v:.1f}",
                    ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels([names[g] for g in groups])
    ax.set_ylabel("test top-1 (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    note = "" if not empty else " (no class in: " + ", ".join(names[g] for g in empty) + ")"
    ax.set_title("Final-epoch accuracy by group" + note)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(runs, path: Path) -> None:
    """Reliability diagram: accuracy against mean confidence per confidence bin of the final
    epoch's test predictions (the diagonal is perfect calibration), ECE in the legend."""
    plt = _plt()
    fig, (ax, counts_ax) = plt.subplots(2, 1, figsize=(5.5, 6.4), sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="perfect calibration")
    shown = [run for run in runs if run["results"].get("reliability")]
    width = 1 / 15 / max(1, len(shown))
    for i, (run, colour) in enumerate(zip(shown, _colours(len(shown)))):
        rel = run["results"]["reliability"]
        counts = rel.get("count") or [None] * len(rel["confidence"])
        # empty bins are left out; a marker's area grows with its bin's images, so a bin of a few
        # images does not look as meaningful as one of thousands
        pts = [(c, a, n) for c, a, n in zip(rel["confidence"], rel["accuracy"], counts) if c is not None and n != 0]
        ece = (run["results"].get("ece") or {}).get("overall")
        total = sum(n for _, _, n in pts if n) or 1
        ax.plot([c for c, _, _ in pts], [a for _, a, _ in pts], color=colour, lw=1,
                label=f"{run['label']} (ECE {format_pct(ece)})")
        ax.scatter([c for c, _, _ in pts], [a for _, a, _ in pts], color=colour, zorder=3,
                   s=[8 + 400 * (n or 0) / total for _, _, n in pts])
        if rel.get("count"):
            lefts = np.arange(len(rel["count"])) / len(rel["count"])
            counts_ax.bar(lefts + i * width, rel["count"], width=width, align="edge", color=colour)
    counts_ax.set_yscale("log")
    counts_ax.set_ylabel("images per bin")
    counts_ax.set_xlabel("mean confidence (softmax probability of the prediction)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("Reliability (final epoch, test split, 15 bins)\nmarker area: images in the bin", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(runs, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    boundaries: set[tuple[float, str]] = set()
    for run, colour in zip(runs, _colours(len(runs))):
        recs = run["curves"]
        if not recs:
            continue
        x = np.arange(1, len(recs) + 1)  # epochs across stages, in order
        label = run["label"]
        stage_of = np.asarray([r["stage_index"] for r in recs])
        # One segment per stage: a line from the last pre-training loss to the first linear-stage
        # loss would draw a trend that does not exist.
        for k, stage in enumerate(np.unique(stage_of)):
            idx = np.flatnonzero(stage_of == stage)
            xs = x[idx]
            tag = label if k == 0 else None  # one legend entry per run
            dots = dict(marker="o", ms=3) if len(idx) <= 20 else {}  # a 1-epoch stage is a point
            axes[0].plot(xs, [recs[i].get("loss", np.nan) for i in idx], color=colour, label=tag, **dots)
            for key in sorted({k for i in idx for k in recs[i] if k.startswith("loss_")}):
                axes[0].plot(xs, [recs[i].get(key, np.nan) for i in idx], ls="--", lw=0.8, color=colour,
                             label=f"{label} {key}")
            axes[1].plot(xs, [recs[i].get("lr", np.nan) for i in idx], color=colour, label=tag, **dots)
            if k > 0:
                boundaries.add((xs[0] - 0.5, recs[idx[0]]["stage"]))
        for split, style in (("val", "-"), ("test", ":")):
            pts = [(xi, r[split]["top1"]) for xi, r in zip(x, recs) if isinstance(r.get(split), dict)]
            if pts:
                axes[2].plot(*zip(*pts), ls=style, marker="o", ms=3, color=colour, label=f"{label} {split}")
    for ax, title in zip(axes, ("training losses (dashed: parts)", "learning rate", "top-1 (%) during training")):
        for bx, stage in sorted(boundaries):
            ax.axvline(bx, color="grey", ls=":", lw=1)
            ax.annotate(f" {stage}", (bx, 1.0), xycoords=("data", "axes fraction"), va="top", fontsize=7, color="grey")
        ax.set_title(title)
        ax.set_xlabel("epoch (all stages in order)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- figures that need the model on the test set ---------------------------------------------
@torch.no_grad()
def outputs_on_test_split(run_dir: Path, max_points: int, device: Optional[str] = None) -> dict[str, Any]:
    """Predicted classes for the whole test set and features of up to ``max_points`` test images."""
    from torch.utils.data import DataLoader

    from ..data import build_eval_data, build_eval_transform
    from ..inference import load

    predictor = load(run_dir, device=device)
    data = build_eval_data(predictor.config, predictor.classes)
    predictor.model.eval()
    data.test.transform = build_eval_transform(data.info)
    loader = DataLoader(data.test, batch_size=256, shuffle=False, num_workers=0)
    preds, labels, feats = [], [], []
    for x, y in loader:
        logits, f = predictor.model.logits_and_features(x.to(predictor.device))  # one backbone pass
        preds.append(logits.argmax(1).cpu())
        labels.append(y)
        feats.append(f.float().cpu())
    labels_t = torch.cat(labels)
    g = torch.Generator().manual_seed(0)
    keep = torch.randperm(len(labels_t), generator=g)[:max_points]
    return {"preds": torch.cat(preds).numpy(), "labels": labels_t.numpy(), "features": torch.cat(feats)[keep].numpy(),
            "feature_labels": labels_t[keep].numpy(), "classes": predictor.classes,
            "counts": list(predictor.model.cls_num.long().tolist())}


def plot_confusion(pred: dict[str, Any], title: str, path: Path) -> None:
    plt = _plt()
    c = len(pred["classes"])
    cm = np.zeros((c, c))
    np.add.at(cm, (pred["labels"], pred["preds"]), 1)
    cm = cm / np.maximum(cm.sum(1, keepdims=True), 1) * 100
    order = np.argsort(-np.asarray(pred["counts"]), kind="stable")  # head classes first
    cm = cm[order][:, order]
    names = [f"{pred['classes'][i]} ({pred['counts'][i]})" for i in order]
    fig, ax = plt.subplots(figsize=(0.45 * c + 3, 0.45 * c + 2.5))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(c))
    ax.set_yticks(range(c))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_yticklabels(names, fontsize=7)
    for i in range(c):
        for j in range(c):
            if cm[i, j] >= 0.5:
                ax.text(j, i, f"{cm[i, j]:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if cm[i, j] > 50 else "black")
    ax.set_xlabel("predicted (training count)")
    ax.set_ylabel("true class, head to tail (training count)")
    ax.set_title(f"{title}: confusion (% of each true class)")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_embedding(pred: dict[str, Any], title: str, path: Path) -> None:
    from sklearn.manifold import TSNE

    plt = _plt()
    feats = pred["features"]
    emb = TSNE(n_components=2, init="pca", perplexity=min(30, max(5, len(feats) // 10)),
               random_state=0).fit_transform(feats)
    groups = shot_groups(pred["counts"])
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for name, mask in groups.items():
        pts = np.isin(pred["feature_labels"], np.flatnonzero(mask))
        if pts.any():
            ax.scatter(emb[pts, 0], emb[pts, 1], s=4, alpha=0.6, color=GROUP_COLOURS[name],
                       label=f"{name} classes ({int(mask.sum())})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=8)
    ax.set_title(f"{title}: t-SNE of {len(feats)} test features")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- the page ----------------------------------------------------------------------------------
def _recorded(value: Optional[float]) -> str:
    return "-" if value is None else format_pct(value)


def _epochs(run: dict[str, Any]) -> str:
    """Epochs trained, per stage for a staged run (``400+10``: pre-training, then linear)."""
    per_stage: dict[int, int] = {}
    for record in run["curves"]:
        per_stage[record["stage_index"]] = max(per_stage.get(record["stage_index"], 0), int(record.get("epoch", 0)))
    if len(per_stage) > 1:
        return "+".join(str(per_stage[i]) for i in sorted(per_stage))
    return str(run["results"].get("epoch"))


def _paper_figure(paper: dict[str, Any]) -> str:
    return _recorded(paper.get("top1")) + (" (recalled)" if paper.get("top1") is not None
                                           and recalled(paper.get("source")) else "")


def paper_notes(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Why a run's paper columns are empty: its recipe differs from the one the published figure
    is for (the keys that differ), or its config names no published figure."""
    notes = []
    for run in runs:
        r = run["results"]
        if r.get("paper_withheld"):
            notes.append(f"- {run['label']}: no paper figure: {r['paper_withheld']}")
        elif not (r.get("paper") or {}).get("top1"):
            notes.append(f"- {run['label']}: no paper figure: its config names no published result")
    return ["", "Paper columns:", "", *notes] if notes else []


def say(text: str) -> None:
    """A progress line, flushed at once: long steps say what they do, also in a scheduler's log."""
    print(text, flush=True)


def write_report(run_dirs: Sequence[str], out: str | os.PathLike, tsne_points: int = REPORT_TSNE_POINTS,
                 model_figures: bool = True, device: Optional[str] = None) -> Path:
    out = Path(out)
    say(f"tailcon report: reading {len(run_dirs)} run(s)")
    out.mkdir(parents=True, exist_ok=True)
    runs = [load_run(d) for d in run_dirs]
    for run, label in zip(runs, run_labels(runs)):
        run["label"] = label
    lines = ["# tailcon report", "", "| run | method | epochs | top-1 | Many | Medium | Few | top-5 | ECE | paper top-1 "
             "| final - paper |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        r = run["results"]
        ece = r.get("ece") or {}
        lines.append(f"| {run['label']} | {run['method']} | {_epochs(run)} | {format_pct(r.get('top1'))} | "
                     f"{format_pct(r.get('many'))} | {format_pct(r.get('medium'))} | {format_pct(r.get('few'))} | "
                     f"{_recorded(r.get('top5'))} | {_recorded(ece.get('overall'))} | "
                     f"{_paper_figure(r.get('paper') or {})} | "
                     f"{'-' if 'top1' not in r.get('vs_paper', {}) else format(r['vs_paper']['top1'], '+.2f')} |")
    lines += paper_notes(runs)
    if any(r["results"].get("ece") for r in runs):
        lines += ["", "ECE per group (expected calibration error over the test images of each group's classes, %):",
                  "", "| run | overall | Many | Medium | Few |", "|---|---|---|---|---|"]
        for run in runs:
            ece = run["results"].get("ece") or {}
            lines.append(f"| {run['label']} | " + " | ".join(_recorded(ece.get(g)) if ece else "-"
                                                             for g in ("overall", "many", "medium", "few")) + " |")
    robustness = [(run, f) for run in runs for f in sorted(Path(run["dir"]).glob("corruptions-*.json"))]
    if robustness:
        import json

        lines += ["", "Corruption robustness (`tailcon eval RUN --corruptions`):", "",
                  "| run | file | clean error | mean corruption error | mCE | corruptions |", "|---|---|---|---|---|---|"]
        for run, f in robustness:
            c = json.loads(f.read_text())
            source = c.get("source") or "on-the-fly approximation (recorded before the source was)"
            label = f"**approximation**: {source}" if c.get("approximation", "released" not in source) else source
            lines.append(f"| {run['label']} | {f.name} | {_recorded(c.get('clean'))} | {_recorded(c.get('mean_error'))} "
                         f"| {_recorded(c.get('mCE'))} | {label} |")
    figures = [("per_class_accuracy.png", "Per-class accuracy against training count", plot_per_class),
               ("shot_groups.png", "Many / Medium / Few", plot_shot_bars),
               ("training_curves.png", "Training curves", plot_curves)]
    if any(r["results"].get("reliability") for r in runs):
        figures.append(("reliability.png", "Reliability diagram", plot_reliability))
    for name, title, fn in figures:
        say(f"tailcon report: drawing {name}")
        fn(runs, out / name)
        lines += ["", f"## {title}", "", f"![{title}]({name})"]
    if model_figures:
        for i, run in enumerate(runs):
            label = run["label"]
            say(f"tailcon report: classifying the test split with {run['dir']} (confusion matrix, t-SNE of "
                f"{tsne_points} points; --no-model skips this)")
            pred = outputs_on_test_split(run["dir"], tsne_points, device)
            lines += ["", f"## {label}: test-set figures", ""]
            if len(pred["classes"]) <= 20:
                name = f"confusion_{i}.png"
                plot_confusion(pred, label, out / name)
                lines.append(f"![confusion matrix of {label}]({name})")
            else:
                lines.append(f"({len(pred['classes'])} classes: no confusion matrix above 20)")
            name = f"tsne_{i}.png"
            plot_embedding(pred, label, out / name)
            lines += ["", f"![t-SNE of {label}]({name})"]
    page = out / "report.md"
    page.write_text("\n".join(lines) + "\n")
    return page
