"""A model's predictions over a dataset (the training loop's evaluation, ``tailcon eval``,
reports and the kNN monitor all go through :func:`predict_dataset`)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from torch.utils.data import DataLoader

from .. import distributed
from ..data import ArrayDataset, ImageInfo
from ..methods import Method
from .device import autocast_context


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
        if distributed.is_distributed():
            images, all_labels = images[distributed.rank()::distributed.world_size()], all_labels[distributed.rank()::distributed.world_size()]
        mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(info.std, device=device).view(1, -1, 1, 1)
        batch = int(cfg["data"]["eval_batch_size"])
        for start in range(0, len(all_labels), batch):
            x = images[start:start + batch].float().div_(255).sub_(mean).div_(std).contiguous(memory_format=fmt)
            with autocast_context(device, cfg["train"]["amp"]):
                parts.append(_summarise(method, x, keep_features))
        labels = [all_labels]
    else:
        if distributed.is_distributed():
            dataset = torch.utils.data.Subset(dataset, range(distributed.rank(), len(dataset), distributed.world_size()))
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


def _from_all_ranks(p: Predictions) -> Predictions:
    """Under torchrun: every rank's share concatenated in rank order (each rank took every
    world_size-th image); otherwise as given."""
    if not distributed.is_distributed():
        return p
    parts = distributed.all_gather_objects((p.top, p.confidence, p.labels, p.features))
    feats = None if p.features is None else torch.cat([q[3] for q in parts])
    return Predictions(*(torch.cat([q[i] for q in parts]) for i in range(3)), feats)
