"""Shuffle-BN for a momentum key encoder (MoCo's trick, used by DSCL's authors).

With per-device BatchNorm, a query and its own key are normalised with statistics of the same
images, and the network can learn to find its positive through that shared signature instead of
through the content. Shuffling the key batch before the key encoder gives every key the
statistics of a random subset instead.

- Under DDP (the authors' scheme): the key images of all ranks are gathered, permuted by one
  random permutation drawn on rank 0 and broadcast, each rank encodes its slice of the permuted
  batch, and the keys are gathered and put back in the original order. Key ``i`` is normalised
  with a random ``1/world`` of the global batch.
- On one device (ghost BN): the batch is permuted and encoded in ``groups`` sub-batches, each
  with its own statistics, then un-permuted: key ``i`` is normalised with a random ``1/groups``
  of the batch, as on ``groups`` devices.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..distributed import gather_no_grad, is_distributed, rank, world_size


@torch.no_grad()
def shuffled_key_forward(encoder: nn.Module, images: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """Encode ``images`` [b, ...] (this rank's batch) with ``encoder`` so that BatchNorm
    statistics are computed over random subsets, and return [b, d] in the input order.

    Under DDP every rank must pass the same ``b`` (DistributedSampler pads the ranks equally);
    ``groups`` applies to the single-process case only (there the ranks are the groups)."""
    if is_distributed():
        local_n = images.shape[0]
        everything = gather_no_grad(images)
        perm = torch.randperm(everything.shape[0], device=images.device)
        dist.broadcast(perm, src=0)  # one permutation for every rank
        mine = perm.view(world_size(), local_n)[rank()]
        keys_in_perm_order = gather_no_grad(encoder(everything[mine]))
        keys = torch.empty_like(keys_in_perm_order)
        keys[perm] = keys_in_perm_order
        return keys[rank() * local_n:(rank() + 1) * local_n]
    perm = torch.randperm(images.shape[0], device=images.device)
    # a Python loop over the (few) BN groups, not over samples: each group is one forward
    encoded = torch.cat([encoder(chunk) for chunk in images[perm].chunk(max(1, int(groups)))])
    keys = torch.empty_like(encoded)
    keys[perm] = encoded
    return keys
