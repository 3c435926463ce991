"""BatchNorm over the authors' per-GPU batches, on any number of devices (``model.bn_batch``).

Every recipe here was trained on 2-8 GPUs without SyncBN, so each BatchNorm layer normalised over
one GPU's share of the batch. On fewer devices tailcon would normalise over more images, which
changes the statistics a method trains with. With ``model.bn_batch: g`` each device's batch is
split into groups of ``g`` images and every BatchNorm layer normalises each group on its own:

* ``model.bn_layout: ddp`` (DistributedDataParallel): a GPU holds whole images, all their views.
  A forward over V views concatenated ([view 1 of B images; view 2; ...], V*B rows) groups rows
  by image: row r belongs to group (r mod B) // g.
* ``model.bn_layout: data_parallel`` (``nn.DataParallel``, BCL): the concatenated rows are cut
  into B // g contiguous chunks, as DataParallel scatters its input.

Running statistics follow the first group, as the authors' kept ones do (rank 0's buffers,
broadcast by DDP at every forward; DataParallel's device-0 replica). Evaluation, a forward whose
rows are not a multiple of B (e.g. BCL's class centres) and ``g >= B`` use ordinary BatchNorm.
The training loop says how many images a step holds (:func:`images_per_view`).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError

LAYOUTS = ("ddp", "data_parallel")
_IMAGES: contextvars.ContextVar[Optional[int]] = contextvars.ContextVar("bn_images_per_view", default=None)


@contextlib.contextmanager
def images_per_view(n: int) -> Iterator[None]:
    """The number of images B of the training step running inside (each view holds B rows)."""
    token = _IMAGES.set(int(n))
    try:
        yield
    finally:
        _IMAGES.reset(token)


class _GroupedBatchNorm:
    """Mixed into nn.BatchNorm1d / 2d by :func:`convert_grouped_batchnorm` (same parameters,
    buffers and state-dict keys: checkpoints do not change)."""

    group_size: int
    layout: str

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = _IMAGES.get()
        g = self.group_size
        if not self.training or images is None or images <= g or x.shape[0] % images:
            return super().forward(x)
        views = x.shape[0] // images
        if self.layout == "ddp":  # [V, B, ...]: group k = images k*g .. (k+1)*g of every view
            per_view = x.unflatten(0, (views, images))
            parts = [per_view[:, s:s + g].flatten(0, 1) for s in range(0, images, g)]
        else:  # contiguous chunks of the concatenated rows
            parts = list(x.split(views * g))
        out = [self._normalise(part, first=k == 0) for k, part in enumerate(parts)]
        if self.layout == "ddp":
            return torch.cat([o.unflatten(0, (views, -1)) for o in out], dim=1).flatten(0, 1)
        return torch.cat(out)

    def _normalise(self, x: torch.Tensor, first: bool) -> torch.Tensor:
        track = first and self.track_running_stats
        if track:
            self.num_batches_tracked.add_(1)
        momentum = (1.0 / float(self.num_batches_tracked)) if self.momentum is None and track else self.momentum
        return F.batch_norm(x, self.running_mean if track else None, self.running_var if track else None,
                            self.weight, self.bias, True, momentum or 0.0, self.eps)


class GroupedBatchNorm1d(_GroupedBatchNorm, nn.BatchNorm1d):
    pass


class GroupedBatchNorm2d(_GroupedBatchNorm, nn.BatchNorm2d):
    pass


def convert_grouped_batchnorm(module: nn.Module, group_size: int, layout: str = "ddp",
                              skip: tuple[str, ...] = ()) -> nn.Module:
    """Make every BatchNorm1d/2d of ``module`` (except those under the names in ``skip``)
    normalise groups of ``group_size`` images in training; in place, returns ``module``."""
    if layout not in LAYOUTS:
        raise ConfigError(f"model.bn_layout={layout!r}: expected one of {', '.join(LAYOUTS)}")
    for name, m in module.named_modules():
        if any(name == s or name.startswith(s + ".") for s in skip):
            continue
        if type(m) in (nn.BatchNorm1d, nn.BatchNorm2d):
            m.__class__ = GroupedBatchNorm1d if isinstance(m, nn.BatchNorm1d) else GroupedBatchNorm2d
            m.group_size, m.layout = int(group_size), layout
    return module
