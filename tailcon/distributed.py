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


TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``node[03-05,9],gpu1`` -> ``node03`` (a range keeps
    its zero padding; every bracket of the first name takes its first value)."""
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):  # the first name ends at the first comma outside brackets
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            end = i
            break
    name = nodelist[:end].strip()
    out, i = "", 0
    while i < len(name):
        if name[i] == "[":
            close = name.index("]", i)
            out += name[i + 1:close].split(",")[0].split("-")[0]
            i = close + 1
        else:
            out += name[i]
            i += 1
    return out


def slurm_environment(env) -> dict[str, str]:
    """What torchrun would set, from SLURM's variables, for ``srun tailcon train ...`` (one task per
    GPU, no torchrun): RANK, WORLD_SIZE, LOCAL_RANK from SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID;
    MASTER_ADDR as set, else the first host of SLURM_JOB_NODELIST (SLURM_NODELIST); MASTER_PORT as
    set, else 15000 + SLURM_JOB_ID mod 20000 (one port per job, the same on every node). Empty
    under torchrun (its variables are set), outside SLURM, and for a one-task job."""
    if any(k in env for k in TORCHRUN_VARIABLES) or "SLURM_PROCID" not in env:
        return {}
    tasks = int(env.get("SLURM_NTASKS") or env.get("SLURM_NPROCS") or 1)
    if tasks <= 1:
        return {}
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
    addr = env.get("MASTER_ADDR") or (first_host(nodelist) if nodelist else "")
    if not addr:
        raise TailconError("a SLURM job of several tasks without MASTER_ADDR or SLURM_JOB_NODELIST: set MASTER_ADDR "
                           "to the first node's address")
    port = env.get("MASTER_PORT") or str(15000 + int(env.get("SLURM_JOB_ID", "0")) % 20000)
    return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": str(tasks), "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "MASTER_ADDR": addr, "MASTER_PORT": port}


def init_from_env() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR, ...), or that a
    SLURM job step of several tasks describes (:func:`slurm_environment`); NCCL with one GPU per
    process (LOCAL_RANK) when CUDA is available, gloo otherwise. False for one process."""
    os.environ.update(slurm_environment(os.environ))
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_cuda_index())
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


def local_cuda_index() -> int:
    """This process's GPU: LOCAL_RANK, or 0 where the launcher gives each task only its own GPU
    (srun --gpus-per-task / CUDA_VISIBLE_DEVICES per task: one visible device)."""
    local, visible = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
    return local if local < visible else local % max(1, visible)


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
        return torch.device("cuda", local_cuda_index())
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
