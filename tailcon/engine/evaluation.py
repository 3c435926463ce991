"""Evaluation: a model's predictions over a dataset, and ``tailcon eval`` of a checkpoint.

Evaluation never rewrites what training wrote: ``tailcon eval`` prints its figures first, then
writes them to their own file beside the checkpoint (``eval-<checkpoint>-<split>.json``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from torch.utils.data import DataLoader

from .. import config as C
from .. import distributed as D
from ..data import ArrayDataset, ImageInfo, build_eval_data, build_eval_transform
from ..methods import Method, build_method
from .device import autocast_context, resolve_device
from .metrics import evaluation_metrics, format_report
from .rundir import RunDir, load_checkpoint, resolve_checkpoint, write_shown_figures


def show_progress(cfg: Mapping[str, Any]) -> bool:
    return bool(cfg["train"]["progress"]) and sys.stderr.isatty()


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class Predictions:
    """What evaluation keeps per image (CPU tensors): the ``k`` highest-scoring classes [N, k]
    (column 0 is the prediction), the softmax probability of the predicted class [N] (for
    calibration), the labels [N], and optionally the backbone features [N, D]."""

    top: torch.Tensor
    confidence: torch.Tensor
    labels: torch.Tensor
    features: Optional[torch.Tensor] = None

    @property
    def classes(self) -> torch.Tensor:
        return self.top[:, 0]


TOP_K = 5


def _summarise(method: Method, x: torch.Tensor, keep_features: bool) -> tuple[torch.Tensor, ...]:
    """Top-k classes, confidence and (optionally) features of one batch, on the device."""
    if keep_features:
        logits, feats = method.logits_and_features(x)
    else:
        logits, feats = method(x), None
    logits = logits.float()
    top = logits.topk(min(TOP_K, logits.shape[1]), dim=1).indices
    confidence = logits.softmax(dim=1).gather(1, top[:, :1]).squeeze(1)
    return top, confidence, feats.float() if feats is not None else torch.empty(0, device=x.device)


@torch.no_grad()
def predict_dataset(method: Method, dataset, cfg: Mapping[str, Any], device: torch.device, desc: str = "eval",
                    info: Optional[ImageInfo] = None, keep_features: bool = False) -> Predictions:
    """Test-time predictions over a dataset (see :class:`Predictions`). Under torchrun each rank
    classifies every world_size-th image and the results are gathered on every rank.

    With ``info`` of small images (whose test transform is only ToTensor + Normalize) an
    in-memory dataset is classified on the device: its uint8 images stay there and are
    normalised in batches, the same arithmetic as the per-image path without the DataLoader.
    """
    from tqdm.auto import tqdm

    was_training = method.training
    method.eval()
    fmt = torch.channels_last if cfg["train"]["channels_last"] else torch.contiguous_format
    parts, labels = [], []
    if info is not None and info.small and isinstance(dataset, ArrayDataset):
        images, all_labels = dataset.on_device(device)
        if D.is_distributed():
            images, all_labels = images[D.rank()::D.world_size()], all_labels[D.rank()::D.world_size()]
        mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(info.std, device=device).view(1, -1, 1, 1)
        batch = int(cfg["data"]["eval_batch_size"])
        for start in range(0, len(all_labels), batch):
            x = images[start:start + batch].float().div_(255).sub_(mean).div_(std).contiguous(memory_format=fmt)
            with autocast_context(device, cfg["train"]["amp"]):
                parts.append(_summarise(method, x, keep_features))
        labels = [all_labels]
    else:
        if D.is_distributed():
            dataset = torch.utils.data.Subset(dataset, range(D.rank(), len(dataset), D.world_size()))
        # evaluation only decodes and normalises: more workers than cores only adds contention (and torch's warning)
        workers = min(int(cfg["data"]["num_workers"]), usable_cpus())
        loader = DataLoader(dataset, batch_size=int(cfg["data"]["eval_batch_size"]), shuffle=False,
                            num_workers=workers, pin_memory=device.type == "cuda")
        for images, y in tqdm(loader, desc=desc, leave=False, disable=not show_progress(cfg)):
            with autocast_context(device, cfg["train"]["amp"]):
                parts.append(_summarise(method, images.to(device, non_blocking=True, memory_format=fmt), keep_features))
            labels.append(y)
    method.train(was_training)
    top, confidence, feats = (torch.cat([p[i] for p in parts]).cpu() for i in range(3))
    local = Predictions(top, confidence, torch.cat(labels).cpu(), feats if keep_features else None)
    return _from_all_ranks(local)


def classify_dataset(method: Method, dataset, cfg: Mapping[str, Any], device: torch.device,
                     desc: str = "eval", info: Optional[ImageInfo] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes (argmax of the test-time logits) and labels over a dataset, as CPU
    tensors (:func:`predict_dataset` keeps more)."""
    p = predict_dataset(method, dataset, cfg, device, desc=desc, info=info)
    return p.classes, p.labels


def _from_all_ranks(p: Predictions) -> Predictions:
    """Under torchrun: every rank's share concatenated in rank order (each rank took every
    world_size-th image); otherwise as given."""
    if not D.is_distributed():
        return p
    parts = D.all_gather_objects((p.top, p.confidence, p.labels, p.features))
    feats = None if p.features is None else torch.cat([q[3] for q in parts])
    return Predictions(*(torch.cat([q[i] for q in parts]) for i in range(3)), feats)


TAU_GRID = tuple(round(0.1 * i, 1) for i in range(21))  # tau-normalisation search: 0, 0.1, ..., 2


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


def _tau_norm(method: Method, data, cfg, device, split: str, tau_norm: str | float, counts) -> tuple[dict, dict]:
    """(metrics of the tau-normalised classifier on ``split``, what was chosen and how)."""
    if not isinstance(method.classifier, torch.nn.Linear):
        raise C.ConfigError("--tau-norm rescales the weight norms of a linear classifier; this run's classifier is "
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


def evaluate_checkpoint(path: str | os.PathLike, split: str = "test", overrides: tuple[str, ...] = (),
                        which: str = "last", tau_norm: str | float | None = None) -> dict[str, Any]:
    """Evaluate a run directory (its ``last.pt`` or ``best.pt``; a staged run: its final stage)
    or a checkpoint file: print the report, then write ``eval-<checkpoint>-<split>.json`` beside
    the checkpoint. The run's ``results.json`` is never touched.

    ``tau_norm``: also evaluate the classifier tau-normalised (a number, or ``"auto"``: the tau of
    :data:`TAU_GRID` with the best top-1 on the validation split, or on the test split, labelled
    so, when there is none); written to ``eval-<checkpoint>-<split>-taunorm.json``."""
    ckpt_path = resolve_checkpoint(path, which)
    ckpt = load_checkpoint(ckpt_path, for_inference=True)
    over = C.parse_overrides(overrides)
    C.check_keys(over, C.DEFAULTS)
    cfg = C.validate(C.merge(C.complete(ckpt["config"]), over))
    device = resolve_device(cfg["device"])
    classes = [str(c) for c in (ckpt.get("classes") or range(int(ckpt["num_classes"])))]
    data = build_eval_data(cfg, classes)  # classes mapped to the model's ids by name
    if split == "val" and data.val is None:
        raise C.ConfigError(f"dataset {data.name!r} has no validation split")
    counts = ckpt["cls_num_list"]
    method = build_method(cfg, ckpt["num_classes"], counts)
    method.load_state_dict(ckpt["model"])
    method.to(device)
    dataset = data.val if split == "val" else data.test
    dataset.transform = build_eval_transform(data.info)
    print(f"tailcon eval: classifying the {len(dataset)} images of the {split} split with {ckpt_path} on {device}",
          flush=True)
    m = evaluation_metrics(predict_dataset(method, dataset, cfg, device, desc=split, info=data.info), counts)
    rows = [(f"{ckpt_path.name} epoch {ckpt['epoch']} ({split})", m)]
    if tau_norm is not None:
        tm, chosen = _tau_norm(method, data, cfg, device, split, tau_norm, counts)
        rows.append((f"tau-normalised, tau={chosen['tau']:g}", tm))
    print(format_report(rows, title=f"{ckpt_path}: {split} split, {m['num_images']} images"))
    missing = [c for c, acc in zip(classes, m["per_class"]) if acc is None]
    if missing:
        print(f"note: {len(missing)} of the model's {len(classes)} classes have no image in this split: "
              f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}; their accuracy is empty and the "
              "group figures are means over the classes present")
    if tau_norm is not None:
        if chosen["selected_on"] == "test":
            print("note: tau was picked on the TEST split (the dataset has no validation split): the tau-normalised "
                  "row is optimistic")
        elif chosen["selected_on"] == "val":
            print(f"tau={chosen['tau']:g} picked on the validation split (top-1 {chosen['grid_top1'][str(chosen['tau'])]:.2f})")
    best = ckpt.get("best")
    if best and best.get("selected_on") == "test":
        print("note: best.pt of this run was selected on the test split (the dataset has no validation split)")
    results = {**m, "split": split, "checkpoint": ckpt_path.name, "epoch": ckpt["epoch"], "best": best,
               "missing_classes": missing}
    out = RunDir(ckpt_path.parent).eval_file(ckpt_path, split)
    write_shown_figures(out, results)
    print(f"tailcon eval: wrote {out}")
    if tau_norm is not None:
        tau_out = RunDir(ckpt_path.parent).eval_file(ckpt_path, split, variant="taunorm")
        write_shown_figures(tau_out, {**tm, "split": split, "checkpoint": ckpt_path.name, "epoch": ckpt["epoch"],
                                      "tau_norm": chosen})
        print(f"tailcon eval: wrote {tau_out}")
    return results
