"""Which training pipeline a run uses, and its batch loaders.

``device``: the uint8 dataset (or the JPEG bytes) go to the training device and every view is
augmented there in batches; ``reference``: per-image PIL transforms in DataLoader workers, the
authors' way. ``data.pipeline=auto`` takes ``device`` where it applies (tailcon.data.loaders).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from .. import config
from ..data import ArrayDataset, EpochSampler, FileListDataset
from ..data.batched_augment import BatchedView, supports as batched_supports
from ..data.build import DataBundle
from ..data.loaders import DecodedDeviceBatches, DeviceBatches, GlobalBatches, reference_loader
from ..methods import Method


def choose_pipeline(want: str, method: Method, data: DataBundle, device: torch.device,
                    paired_recipes: Sequence[str] = ()) -> str:
    """``device`` or ``reference``; ``want=device`` where it cannot apply is an error saying why."""
    recipes = list(method.view_recipes()) + list(paired_recipes)
    reasons = []
    in_memory = isinstance(data.train, ArrayDataset)
    if not in_memory and not isinstance(data.train, FileListDataset):
        reasons.append(f"the training set of {data.name!r} is neither in memory nor a list of files")
    if not in_memory and want == "auto" and device.type != "cuda":
        reasons.append("decoding files on a CPU is faster in DataLoader workers")  # auto: GPU decode only
    if not in_memory and data.info.small:
        reasons.append("small images read from files are cropped with padding, which needs equal sizes")
    if type(method).train_transform is not Method.train_transform:
        reasons.append(f"method {method.name!r} builds its own per-image views")
    if not batched_supports(recipes):
        reasons.append(f"recipes {recipes} have no batched version")
    if want == "device" and reasons:
        raise config.ConfigError("data.pipeline=device is not possible here: " + "; ".join(reasons)
                            + ". Use data.pipeline=reference (or auto)")
    return "reference" if want == "reference" or reasons else "device"


def build_train_loader(pipeline: str, dataset, sampler: EpochSampler, seed: int, recipes: Sequence[str],
                       transform: Optional[Callable], data: DataBundle, cfg: Mapping[str, Any],
                       device: torch.device, world_size: int, rank: int, memory_format=torch.contiguous_format):
    """An iterable of ``(views, labels)`` per step: this rank's share of each global batch."""
    d = cfg["data"]
    batches = GlobalBatches(sampler, int(d["batch_size"]), bool(d["drop_last"]), world_size, rank)
    if pipeline == "device":
        views = [BatchedView(r, data.info) for r in recipes]
        if isinstance(dataset, ArrayDataset):
            return DeviceBatches(dataset.images, dataset.targets, batches, views, device, seed, memory_format)
        return DecodedDeviceBatches(dataset, batches, views, device, seed, int(d["num_workers"]), memory_format)
    dataset.transform = transform
    return reference_loader(dataset, batches, seed, int(d["num_workers"]), device.type == "cuda")
