"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of a training batch (``data.mixup``,
``data.cutmix``: the Beta(alpha, alpha) parameter; 0 is off). With both on, each batch takes one
of the two at random, as timm does. The draws come from NumPy's and torch's global generators,
which the trainer seeds per epoch, so a resumed run mixes as an uninterrupted one; nothing is
read back from the device."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch


def mix_batch(images: torch.Tensor, labels: torch.Tensor, mixup: float, cutmix: float
              ) -> Optional[tuple[torch.Tensor, torch.Tensor, float]]:
    """``(mixed images [B, C, H, W], partner labels [B], lam)`` or None when both are off. The
    loss is ``lam * loss(labels) + (1 - lam) * loss(partner labels)``: a soft target."""
    if mixup <= 0 and cutmix <= 0:
        return None
    use_cutmix = cutmix > 0 and (mixup <= 0 or np.random.rand() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(images.shape[0], device=images.device)
    if not use_cutmix:
        return images.mul(lam).add_(images[perm], alpha=1 - lam), labels[perm], lam
    h, w = images.shape[-2:]
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = int(np.random.randint(h)), int(np.random.randint(w))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    mixed = images.clone()
    mixed[..., y0:y1, x0:x1] = images[perm][..., y0:y1, x0:x1]
    return mixed, labels[perm], 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the pasted area decides the weight
