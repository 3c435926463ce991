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
from ..data import ArrayDataset, ImageInfo, build_data, build_eval_transform
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


def evaluate_checkpoint(path: str | os.PathLike, split: str = "test", overrides: tuple[str, ...] = (),
                        which: str = "last") -> dict[str, Any]:
    """Evaluate a run directory (its ``last.pt`` or ``best.pt``; a staged run: its final stage)
    or a checkpoint file: print the report, then write ``eval-<checkpoint>-<split>.json`` beside
    the checkpoint. The run's ``results.json`` is never touched."""
    ckpt_path = resolve_checkpoint(path, which)
    ckpt = load_checkpoint(ckpt_path, for_inference=True)
    over = C.parse_overrides(overrides)
    C.check_keys(over, C.DEFAULTS)
    cfg = C.validate(C.merge(C.complete(ckpt["config"]), over))
    device = resolve_device(cfg["device"])
    data = build_data(cfg)
    if split == "val" and data.val is None:
        raise C.ConfigError(f"dataset {data.name!r} has no validation split")
    counts = ckpt["cls_num_list"]
    method = build_method(cfg, ckpt["num_classes"], counts)
    method.load_state_dict(ckpt["model"])
    method.to(device)
    dataset = data.val if split == "val" else data.test
    dataset.transform = build_eval_transform(data.info)
    m = evaluation_metrics(predict_dataset(method, dataset, cfg, device, desc=split, info=data.info), counts)
    print(format_report([(f"{ckpt_path.name} epoch {ckpt['epoch']} ({split})", m)],
                        title=f"{ckpt_path}: {split} split, {m['num_images']} images"))
    best = ckpt.get("best")
    if best and best.get("selected_on") == "test":
        print("note: best.pt of this run was selected on the test split (the dataset has no validation split)")
    results = {**m, "split": split, "checkpoint": ckpt_path.name, "epoch": ckpt["epoch"], "best": best}
    out = RunDir(ckpt_path.parent).eval_file(ckpt_path, split)
    write_shown_figures(out, results)
    print(f"tailcon eval: wrote {out}")
    return results
