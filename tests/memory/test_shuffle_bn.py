"""Shuffle-BN for DSCL's key encoder: a key's BatchNorm statistics come from a random subset of
the batch (never fixed by its position), on one process (ghost BN) and across 2 gloo ranks."""

import pytest
import torch
from torch import nn

from tailcon.memory import shuffled_key_forward

from ddp_utils import run_ddp

B = 8


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).double().train()


def _images(n=B) -> torch.Tensor:
    return torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _bn_partners(encoder, images, groups, seed) -> list[frozenset]:
    """For each key i, the images whose change moves key i (its BatchNorm batch)."""
    torch.manual_seed(seed)
    base = shuffled_key_forward(encoder, images, groups)
    partners = [set() for _ in range(len(images))]
    for j in range(len(images)):
        changed = images.clone()
        changed[j] += 3.0
        torch.manual_seed(seed)  # the same permutation
        moved = (shuffled_key_forward(encoder, changed, groups) - base).abs().amax(dim=1) > 1e-9
        for i in torch.nonzero(moved).flatten().tolist():
            partners[i].add(j)
    return [frozenset(p) for p in partners]


def test_each_key_shares_batch_statistics_only_with_a_random_group_of_the_batch():
    encoder, images = _encoder(), _images()
    partitions = set()
    for seed in range(4):
        partners = _bn_partners(encoder, images, groups=2, seed=seed)
        for i, p in enumerate(partners):
            assert i in p and len(p) == B // 2, (i, p)
        groups = set(partners)
        assert len(groups) == 2 and frozenset().union(*groups) == frozenset(range(B))  # a partition
        partitions.add(frozenset(groups))
    # drawn afresh each step: not the fixed halves a query batch split would give
    assert len(partitions) > 1


def test_keys_come_back_in_input_order_and_one_group_is_plain_batch_norm():
    encoder, images = _encoder(), _images()
    torch.manual_seed(3)
    torch.testing.assert_close(shuffled_key_forward(encoder, images, groups=1), encoder(images))
    torch.manual_seed(3)
    perm = torch.randperm(B)
    halves = [encoder(images[perm[:B // 2]]), encoder(images[perm[B // 2:]])]
    expected = torch.empty(B, 5, dtype=torch.float64)
    expected[perm] = torch.cat(halves)
    torch.manual_seed(3)
    torch.testing.assert_close(shuffled_key_forward(encoder, images, groups=2), expected)


def _rank_keys(rank, world, seed):
    torch.manual_seed(seed + rank * 1000)  # ranks' generators differ: only rank 0's permutation may count
    half = B // world
    images = _images()[rank * half:(rank + 1) * half]
    encoder = _encoder()
    torch.manual_seed(seed) if rank == 0 else None
    return shuffled_key_forward(encoder, images)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 7])
def test_under_ddp_keys_are_normalised_across_ranks_with_rank0s_permutation(tmp_path, seed):
    """2 ranks holding half the batch each give the keys one process computes with 2 BN groups
    and the same permutation: key i's statistics come from a random half of the global batch."""
    torch.set_num_threads(1)
    keys = run_ddp(_rank_keys, seed, tmp_path=tmp_path)
    encoder, images = _encoder(), _images()
    torch.manual_seed(seed)
    single = shuffled_key_forward(encoder, images, groups=2)
    torch.testing.assert_close(torch.cat(keys), single)
    torch.manual_seed(seed)
    unshuffled = torch.cat([encoder(images[:B // 2]), encoder(images[B // 2:])])
    assert not torch.allclose(single, unshuffled), "the ranks' own halves would share statistics with the query"
