"""``tailcon bench``: training throughput of a config, side by side with the reference pipeline.

Both measurements run the same method, model, loss and optimiser step on the same data, in the
same process, for the same number of timed steps after a warm-up:

* **tailcon**: the config as given (by default on-device batched augmentation for in-memory
  data, channels_last, bf16 autocast on GPUs, optional torch.compile);
* **reference**: what the authors' code does: per-image PIL transforms in a DataLoader with
  ``data.num_workers`` workers, fp32, NCHW, no compilation, glibc's default allocator settings
  (tailcon's allocator tuning, :mod:`tailcon.engine.host`, is part of the tailcon side).

Each side runs in its own fresh process, so peak memory is that side's own (GPU: peak
allocated; CPU: the process's resident high-water mark).

Images per second count training samples (a 3-view BCL sample is one image).
"""

from __future__ import annotations

import copy
import itertools
import resource
import sys
import time
from typing import Any

import torch

from ..defaults import BENCH_STEPS, BENCH_WARMUP
from ..engine.device import autocast_context
from ..engine.trainer import Trainer
from ..config import ConfigError

REFERENCE = {"data": {"pipeline": "reference"}, "train": {"channels_last": False, "amp": "none", "compile": False}}


def _peak_host_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def measure(cfg: dict[str, Any], steps: int, warmup: int) -> dict[str, Any]:
    """Images/s over ``steps`` optimisation steps after ``warmup`` (loader start-up, compilation
    and allocator warm-up excluded) and peak memory (GPU: allocated; CPU: process high-water)."""
    trainer = Trainer.from_config(cfg)
    trainer.method.train()
    trainer.sampler.set_epoch(0)
    if trainer.paired_loader is not None:
        trainer.paired_sampler.set_epoch(0)
    device = trainer.device
    if len(trainer.loader) < steps + warmup:
        raise ConfigError(f"bench needs {steps + warmup} batches per epoch, the data gives {len(trainer.loader)}; "
                         f"use fewer --steps or a smaller data.batch_size")
    amp = autocast_context(device, trainer.amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    batches = trainer.batches()
    n_images, start = 0, 0.0
    for i, (views, labels, extra) in enumerate(itertools.islice(batches, warmup + steps)):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        losses = trainer.train_step(views, labels, extra, amp)
        if i >= warmup:
            n_images += labels.shape[0]
    float(losses["loss"].detach())  # waits for the last step
    _sync(device)
    elapsed = time.perf_counter() - start
    batches.close()
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_host_mb()
    out = {"images_per_s": n_images / elapsed, "seconds": elapsed, "steps": steps, "peak_memory_mb": peak,
           "pipeline": trainer.pipeline, "amp": trainer.amp,
           "channels_last": bool(trainer.cfg["train"]["channels_last"]),
           "compile": trainer.cfg["train"]["compile"], "device": str(device)}
    del trainer, batches
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_in_subprocess(cfg: dict[str, Any], steps: int, warmup: int, env: dict[str, str] | None = None) -> dict:
    """:func:`measure` in a fresh Python process, so that each pipeline starts from a clean heap
    and its peak memory is its own."""
    import json
    import os
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cfg_path, out_path = os.path.join(tmp, "cfg.json"), os.path.join(tmp, "out.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        cmd = [sys.executable, "-m", "tailcon.tools.bench", cfg_path, out_path, str(steps), str(warmup)]
        proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"bench measurement failed:\n{proc.stdout[-4000:]}")
        with open(out_path) as f:
            return json.load(f)


def run_bench(cfg: dict[str, Any], steps: int = BENCH_STEPS, warmup: int = BENCH_WARMUP,
              reference: bool = True) -> dict[str, Any]:
    from .. import config

    cfg = copy.deepcopy(cfg)
    cfg["train"]["progress"] = False
    ours = measure_in_subprocess(cfg, steps, warmup)
    result = {"method": cfg["method"]["name"], "backbone": cfg["model"]["backbone"], "data": cfg["data"]["name"],
              "batch_size": int(cfg["data"]["batch_size"]), "threads": torch.get_num_threads(), **ours}
    if reference:
        # the authors' scripts run with glibc's default allocator settings
        ref = measure_in_subprocess(config.merge(cfg, REFERENCE), steps, warmup, env={"TAILCON_MALLOC_TUNING": "0"})
        result.update(reference_images_per_s=ref["images_per_s"], reference_peak_memory_mb=ref["peak_memory_mb"],
                      reference_num_workers=int(cfg["data"]["num_workers"]),
                      ratio=ours["images_per_s"] / ref["images_per_s"])
    return result


def format_bench(r: dict[str, Any]) -> str:
    lines = [f"tailcon bench: {r['method']} / {r['backbone']} / {r['data']}, batch {r['batch_size']}, "
             f"{r['steps']} timed steps on {r['device']} ({r['threads']} threads)",
             f"  tailcon   ({r['pipeline']} pipeline, amp {r['amp']}, channels_last {r['channels_last']}, "
             f"compile {r['compile']}): {r['images_per_s']:.1f} img/s, peak memory {r['peak_memory_mb']:.0f} MB"]
    if "ratio" in r:
        lines.append(f"  reference (PIL per image, {r['reference_num_workers']} workers, fp32, NCHW): "
                     f"{r['reference_images_per_s']:.1f} img/s")
        lines.append(f"  ratio: {r['ratio']:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m tailcon.tools.bench CFG.json OUT.json STEPS WARMUP
    import json

    _cfg_path, _out_path, _steps, _warmup = sys.argv[1:5]
    with open(_cfg_path) as _f:
        _result = measure(json.load(_f), int(_steps), int(_warmup))
    with open(_out_path, "w") as _f:
        json.dump(_result, _f)
