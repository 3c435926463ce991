"""Training speed of a bare backbone step (forward, backward, SGD) per memory layout.

It bounds what any data pipeline can reach: a CIFAR method whose step runs at this speed is
limited by the convolutions, not by augmentation. ``--profile`` prints where the time goes.

    python benchmarks/backbone_speed.py [--backbone resnet32] [--batch 256] [--steps 5] [--profile]
        [--amp none bf16] [--rounds 2]

With several ``--amp`` modes each layout is measured in every mode, alternately, ``--rounds``
times in one process, so a busy or throttling machine affects all modes alike.
"""

from __future__ import annotations

import argparse
import time

import torch

from tailcon.engine.device import cpu_has_amx
from tailcon.engine.host import tune_host_allocator
from tailcon.models import build_backbone

LAYOUTS = {  # name -> (memory format, oneDNN on)
    "nchw": (torch.contiguous_format, True),
    "nhwc": (torch.channels_last, True),
    "nchw-no-onednn": (torch.contiguous_format, False),
}


def images_per_second(backbone: str, layout: str, batch: int, steps: int, profile: bool = False,
                      amp: str = "none") -> float:
    fmt, onednn = LAYOUTS[layout]
    torch.backends.mkldnn.enabled = onednn
    try:
        torch.manual_seed(0)
        model = build_backbone(backbone).to(memory_format=fmt)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = torch.randn(batch, 3, 32, 32).to(memory_format=fmt)

        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16")

        def step() -> None:
            with autocast:
                loss = model(x).float().pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(2):  # warm-up: oneDNN picks its kernels, the allocator settles
            step()
        if profile:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                step()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * batch / (time.perf_counter() - start)
    finally:
        torch.backends.mkldnn.enabled = True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet32")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--amp", nargs="+", default=["none"], choices=["none", "bf16"], help="autocast: none (fp32), bf16")
    ap.add_argument("--rounds", type=int, default=1, help="alternate the --amp modes this many times")
    args = ap.parse_args()
    tune_host_allocator()  # as `tailcon train` does on CPUs
    print(f"{args.backbone}, batch {args.batch}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, AMX tiles: {cpu_has_amx()}")
    for layout in args.layouts:
        for r in range(args.rounds):
            for amp in args.amp:
                rate = images_per_second(args.backbone, layout, args.batch, args.steps, args.profile, amp)
                print(f"{layout:>15} {amp:>4} (round {r + 1}): {rate:7.1f} images/s", flush=True)


if __name__ == "__main__":
    main()
