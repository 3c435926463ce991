"""BatchNorm over the global batch of all DDP ranks (``model.sync_bn``).

On CUDA this is torch's ``nn.SyncBatchNorm``. torch's version runs on GPUs only, so on other
devices (the gloo/CPU runs the tests use) :class:`GlobalBatchNorm` does the same computation:
per-channel sums and sums of squares all-reduced with gradients, biased variance for the
normalisation and unbiased for the running estimate.
"""

from __future__ import annotations

import torch
from torch import nn

from ..distributed import all_reduce_with_grad, is_distributed
from ..losses.precision import at_least_fp32


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Drop-in for BatchNorm1d/2d whose training statistics cover every rank's batch."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = at_least_fp32(x)
        count = torch.full((1,), x.numel() / x.shape[1], device=x.device, dtype=xf.dtype)
        stats = all_reduce_with_grad(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1).clamp(min=1))
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device, skip: tuple[str, ...] = ()) -> nn.Module:
    """Every BatchNorm layer of ``module`` -> a synchronised one (torch's on CUDA), except inside
    the direct submodules named in ``skip``."""
    for name, child in module.named_children():
        if name in skip:
            continue
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(child) if device.type == "cuda" else _convert(child)
        setattr(module, name, converted)
    return module


def _convert(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        out.load_state_dict(module.state_dict())
        out.train(module.training)
        out.to(next(iter(module.state_dict().values())).device if module.state_dict() else "cpu")
        if module.affine:
            out.weight.requires_grad_(module.weight.requires_grad)
            out.bias.requires_grad_(module.bias.requires_grad)
    for name, child in module.named_children():
        out.add_module(name, _convert(child))
    return out


__all__ = ["GlobalBatchNorm", "convert_sync_batchnorm"]
