"""torch.distributed helpers: gathers that keep gradients.

Contrastive losses gather features from every rank so that N ranks see the same contrast set as
one process with the whole batch. :func:`gather_with_grad` concatenates the shards in rank
order; in backward it sums the incoming gradients over ranks (all-reduce) and returns the local
slice. Every rank computes the same full-batch loss, so the local features receive
``world_size`` times the single-process gradient and DDP's gradient *averaging* then gives
exactly the single-process parameter gradient. Works on gloo (CPU) and NCCL.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from .errors import TailconError


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """[n, ...] on each rank -> [world*n, ...] in rank order (equal n on every rank);
    identity outside torch.distributed.

    Not ``torch.distributed.nn.functional.all_gather``: swapped in (torch 2.14, gloo), it gave
    ResCom's local-contrast gradients up to 70x off the one-process ones
    (``tests/memory/test_queue_methods_parts.py::test_ddp_two_processes_match_one_process_with_the_whole_batch``
    fails with it), where this all-reduce-then-slice backward matches to 1e-12."""
    return _GatherWithGrad.apply(x) if is_distributed() else x


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


class _AllReduceWithGrad(torch.autograd.Function):
    """Sum over ranks; backward sums the incoming gradients over ranks too (see module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous().clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_with_grad(x: torch.Tensor) -> torch.Tensor:
    return _AllReduceWithGrad.apply(x) if is_distributed() else x


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def init_from_env() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR, ...); NCCL with
    one GPU per process (LOCAL_RANK) when CUDA is available, gloo otherwise. False when not
    launched by torchrun with more than one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend, timeout = "nccl" if cuda else "gloo", process_group_timeout()
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
        if restart > 0:
            # a worker restarted by torchrun: the store may still hold the previous attempt's
            # addresses (of dead workers), on which gloo's connect waits; keys of this attempt
            # only, under their own prefix
            store, rank_, world = next(dist.rendezvous("env://", timeout=timeout))
            store = dist.PrefixStore(f"tailcon/restart{restart}", store)
            dist.init_process_group(backend=backend, store=store, rank=rank_, world_size=world, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, timeout=timeout)
    return True


def process_group_timeout() -> datetime.timedelta:
    """How long a collective waits for a peer before the job ends with an error instead of
    hanging: ``TAILCON_DIST_TIMEOUT`` seconds (default 900; longer than any checkpoint write or
    evaluation that the other ranks wait for)."""
    seconds = float(os.environ.get("TAILCON_DIST_TIMEOUT", "900"))
    if not 0 < seconds < 10**7:
        raise TailconError(f"TAILCON_DIST_TIMEOUT={seconds:g}: expected seconds > 0")
    return datetime.timedelta(seconds=seconds)


def local_device(name: str | None) -> torch.device | None:
    """Under torchrun with CUDA every process uses cuda:LOCAL_RANK."""
    if is_distributed() and name in (None, "auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return None


def broadcast_object(obj):
    """Rank 0's value of a picklable object on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj) -> list:
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    return sum_over_ranks(x) / world_size()


def barrier() -> None:
    if is_distributed():
        dist.barrier()
