"""Run a function in 2 gloo processes on the CPU and collect what each rank returns."""

import os
import pickle
import socket

import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, port, fn, args, out_dir):
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = fn(rank, world, *args)
        with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
            pickle.dump(result, f)
    finally:
        dist.destroy_process_group()


def run_ddp(fn, *args, world: int = 2, tmp_path) -> list:
    """``fn(rank, world, *args)`` in ``world`` processes; returns the per-rank results."""
    mp.start_processes(_entry, args=(world, _free_port(), fn, args, str(tmp_path)), nprocs=world,
                       join=True, start_method="spawn")
    out = []
    for r in range(world):
        with open(os.path.join(tmp_path, f"rank{r}.pkl"), "rb") as f:
            out.append(pickle.load(f))
    return out
