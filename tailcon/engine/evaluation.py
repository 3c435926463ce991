"""Evaluation: a model's predicted classes over a dataset, and ``tailcon eval`` of a checkpoint.

Evaluation never rewrites what training wrote: ``tailcon eval`` prints its figures first, then
writes them to their own file beside the checkpoint (``eval-<checkpoint>-<split>.json``).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping, Optional

import torch
from torch.utils.data import DataLoader

from .. import config as C
from .. import distributed as D
from ..data import ArrayDataset, ImageInfo, build_data, build_eval_transform
from ..methods import Method, build_method
from .device import autocast_context, resolve_device
from .metrics import format_report, shot_accuracy
from .rundir import RunDir, load_checkpoint, resolve_checkpoint, write_shown_figures


def show_progress(cfg: Mapping[str, Any]) -> bool:
    return bool(cfg["train"]["progress"]) and sys.stderr.isatty()


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@torch.no_grad()
def classify_dataset(method: Method, dataset, cfg: Mapping[str, Any], device: torch.device,
                     desc: str = "eval", info: Optional[ImageInfo] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes (argmax of the test-time logits) and labels over a dataset, as CPU
    tensors. Under torchrun each rank classifies every world_size-th image and the results are
    gathered on every rank.

    With ``info`` of small images (whose test transform is only ToTensor + Normalize) an
    in-memory dataset is classified on the device: its uint8 images stay there and are
    normalised in batches, the same arithmetic as the per-image path without the DataLoader.
    """
    from tqdm.auto import tqdm

    if info is not None and info.small and isinstance(dataset, ArrayDataset):
        return _classify_on_device(method, dataset, cfg, device, info)
    if D.is_distributed():
        dataset = torch.utils.data.Subset(dataset, range(D.rank(), len(dataset), D.world_size()))

    # evaluation only decodes and normalises: more workers than cores only adds contention (and torch's warning)
    workers = min(int(cfg["data"]["num_workers"]), usable_cpus())
    loader = DataLoader(dataset, batch_size=int(cfg["data"]["eval_batch_size"]), shuffle=False,
                        num_workers=workers, pin_memory=device.type == "cuda")
    was_training = method.training
    method.eval()
    classes, labels = [], []
    fmt = torch.channels_last if cfg["train"]["channels_last"] else torch.contiguous_format
    for images, y in tqdm(loader, desc=desc, leave=False, disable=not show_progress(cfg)):
        with autocast_context(device, cfg["train"]["amp"]):
            logits = method(images.to(device, non_blocking=True, memory_format=fmt))
        classes.append(logits.argmax(dim=1))
        labels.append(y)
    method.train(was_training)
    classes_t, labels_t = torch.cat(classes).cpu(), torch.cat(labels)
    return _from_all_ranks(classes_t, labels_t)


@torch.no_grad()
def _classify_on_device(method: Method, dataset: ArrayDataset, cfg: Mapping[str, Any], device: torch.device,
                        info: ImageInfo) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = dataset.on_device(device)
    if D.is_distributed():
        images, labels = images[D.rank()::D.world_size()], labels[D.rank()::D.world_size()]
    mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=device).view(1, -1, 1, 1)
    fmt = torch.channels_last if cfg["train"]["channels_last"] else torch.contiguous_format
    was_training = method.training
    method.eval()
    classes = []
    batch = int(cfg["data"]["eval_batch_size"])
    for start in range(0, len(labels), batch):
        x = images[start:start + batch].float().div_(255).sub_(mean).div_(std).contiguous(memory_format=fmt)
        with autocast_context(device, cfg["train"]["amp"]):
            classes.append(method(x).argmax(dim=1))
    method.train(was_training)
    classes_t, labels_t = torch.cat(classes).cpu(), labels.cpu()
    return _from_all_ranks(classes_t, labels_t)


def _from_all_ranks(classes: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Under torchrun: every rank's share concatenated in rank order (each rank took every
    world_size-th image); otherwise as given."""
    if not D.is_distributed():
        return classes, labels
    parts = D.all_gather_objects((classes, labels))
    return torch.cat([p for p, _ in parts]), torch.cat([y for _, y in parts])


def evaluate_checkpoint(path: str | os.PathLike, split: str = "test", overrides: tuple[str, ...] = (),
                        which: str = "last") -> dict[str, Any]:
    """Evaluate a run directory (its ``last.pt`` or ``best.pt``; a staged run: its final stage)
    or a checkpoint file: print the report, then write ``eval-<checkpoint>-<split>.json`` beside
    the checkpoint. The run's ``results.json`` is never touched."""
    ckpt_path = resolve_checkpoint(path, which)
    ckpt = load_checkpoint(ckpt_path)
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
    classes, labels = classify_dataset(method, dataset, cfg, device, desc=split, info=data.info)
    m = shot_accuracy(classes, labels, counts)
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
