"""One prepared command for a lent GPU: smoke-test every method, measure throughput, run recipes.

    PYTHONPATH=. python benchmarks/gpu_check.py --data DIR --out DIR [--budget-s 480] [--dry-run]

Within ``--budget-s`` seconds, in this order, each part's figures written as soon as they exist
(``OUT/gpu_check.json``, rewritten atomically after every item, and ``OUT/gpu_check.log``):

1. ``smoke``: every registered method trains a few steps through the device pipeline with bf16
   autocast, then with ``train.compile=true`` (GPU only); a folder of JPEGs this script writes is
   trained through the GPU JPEG decode path. ``{name: "ok" or the error}``.
2. ``bench``: ``tailcon bench`` of each recipe below, alone on the GPU: ``images_per_s``,
   ``peak_memory_mb``.
3. ``recipes``: the CIFAR-10-LT IF100 recipes unchanged (BCL, ResCom with both schedules, ProCo,
   logit-adjusted CE; BCL also in bf16), all at once, each in its own process and run directory:
   one ResNet-32 job at batch 128-256 leaves most of an H100 idle. Stopped cleanly at the deadline:
   ``{config: {epochs_done, wall_s, top1_final, top1_best, many, medium, few, finished,
   images_per_s, images_per_s_alone, concurrency_cost}}``, where ``images_per_s`` is the run's
   mean training speed beside the others and ``concurrency_cost`` = 1 - that / the bench figure.
   What the budget did not reach is listed under ``not_reached``.

``--data DIR`` holds ``cifar-10-batches-py/``, or the image archive ``cifar10-images.tar.gz`` and
``to_cifar_python.py`` (from ``shared/data``; carry them in an ignored folder), converted into
``OUT/cifar`` first. Nothing is installed or downloaded. ``--dry-run`` does the same on the CPU at
toy sizes (the embedded digits data, a few steps, no compilation) in well under a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from tailcon import config, resolution  # noqa: E402
from tailcon.rundir import atomic_write_text  # noqa: E402

# name -> (shipped config, extra overrides); all run at once, the most wanted first
RECIPES = {"cifar10_lt/bcl": ("cifar10_lt/bcl", []),
           "cifar10_lt/rescom": ("cifar10_lt/rescom", []),
           "cifar10_lt/rescom_constant_lr": ("cifar10_lt/rescom_constant_lr", []),
           "cifar10_lt/proco": ("cifar10_lt/proco", []),
           "cifar10_lt/logit_adjusted": ("cifar10_lt/logit_adjusted", []),
           "cifar10_lt/bcl+bf16": ("cifar10_lt/bcl", ["train.amp=bf16"])}  # accuracy of bf16 against fp32


class Check:
    """The report being built, written after every item; the log, flushed after every line."""

    def __init__(self, out: Path, budget_s: float):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.deadline = time.monotonic() + budget_s
        self.log_file = open(out / "gpu_check.log", "a", encoding="utf-8")
        self.report = {"device": _device_name(), "torch": torch.__version__, "budget_s": budget_s,
                       "smoke": {}, "bench": {}, "recipes": {}, "not_reached": []}
        self.save()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def log(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def save(self) -> None:
        atomic_write_text(self.out / "gpu_check.json", json.dumps(self.report, indent=1))


def _device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]


# ---- data ------------------------------------------------------------------------------------------
def prepare_cifar(data: Path, out: Path) -> Path:
    """A folder holding cifar-10-batches-py/, converting the image archive if that is what was carried."""
    for cand in (data, data / "cifar"):
        if (cand / "cifar-10-batches-py").is_dir():
            return cand
    target = out / "cifar"
    if (target / "cifar-10-batches-py").is_dir():
        return target
    archive, converter = data / "cifar10-images.tar.gz", data / "to_cifar_python.py"
    if not (archive.is_file() and converter.is_file()):
        raise FileNotFoundError(f"{data} holds neither cifar-10-batches-py/ nor cifar10-images.tar.gz with "
                                "to_cifar_python.py")
    subprocess.run([sys.executable, str(converter), str(archive), str(target), "--kind", "cifar10"], check=True)
    return target


def write_jpegs(root: Path, per_class: int = 4, size: int = 48) -> Path:
    """A small folder dataset of JPEGs (two classes) for the GPU decode path."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = (torch.rand(size, size + 8 * i, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / c / f"{i}.jpg", quality=90)
    return root


# ---- parts ----------------------------------------------------------------------------------------
def smoke(check: Check, base: list[str], dry_run: bool) -> None:
    from tailcon.engine import Trainer
    from tailcon.methods import METHODS

    modes = [("bf16", ["train.amp=bf16"])] + ([] if dry_run else [("compile", ["train.amp=bf16",
                                                                                "train.compile=true"])])
    from tailcon.rundir import save_checkpoint

    trained = check.out / "smoke-ce.pt"  # ce's smoke run is the trained run that crt re-trains a classifier on
    small = {"rescom": ["method.k_neg=20"], "dscl": ["method.queue_size=64", "method.patch_size=8",
                                                     "method.stage=pretrain"],
             "supcon": ["method.stage=pretrain"], "paco": ["method.queue_size=256"],
             "gpaco": ["method.queue_size=256"], "ldam_drw": ["model.classifier=cosine"],
             "crt": [f"method.init_from={trained}"]}
    for mode, extra in modes:
        for name in sorted(METHODS):
            key = f"{name}/{mode}"
            if check.left() <= 0:
                check.report["not_reached"].append(f"smoke {key}")
                continue
            try:
                cfg = resolution.resolve(None, base + [f"method.name={name}", "train.max_steps_per_epoch=3", "run_dir=",
                                              *small.get(name, []), *extra])
                trainer = Trainer.from_config(cfg)
                stats = trainer.train_one_epoch(0, 1)
                if not all(v == v for v in stats.values()):
                    raise FloatingPointError(f"non-finite statistics {stats}")
                if name == "ce":
                    save_checkpoint(trainer.state_dict(1), trained)
                check.report["smoke"][key] = "ok"
            except Exception as e:  # one broken method must not stop the check
                check.report["smoke"][key] = _error(e)
                check.log(traceback.format_exc(limit=3))
            finally:
                if mode == "compile":
                    torch.compiler.reset()
            check.log(f"smoke {key}: {check.report['smoke'][key]}")
            check.save()
    try:  # file dataset through the device JPEG decode
        root = write_jpegs(check.out / "jpeg")
        cfg = resolution.resolve(None, ["data.name=folder", f"data.root={root}", "data.image_size=32", "data.batch_size=8",
                               "data.pipeline=device", "data.num_workers=2", "model.backbone=resnet8", "run_dir=",
                               "train.max_steps_per_epoch=1", "train.progress=false"])
        Trainer.from_config(cfg).train_one_epoch(0, 1)
        check.report["smoke"]["jpeg_decode/device"] = "ok"
    except Exception as e:
        check.report["smoke"]["jpeg_decode/device"] = _error(e)
    check.log(f"smoke jpeg_decode/device: {check.report['smoke']['jpeg_decode/device']}")
    check.save()


def bench(check: Check, configs: dict[str, list[str]], steps: int, warmup: int) -> None:
    from tailcon.tools.bench import run_bench

    for name, args in configs.items():
        if check.left() <= 0:
            check.report["not_reached"].append(f"bench {name}")
            continue
        try:
            r = run_bench(resolution.resolve(args[0], args[1:]), steps=steps, warmup=warmup, reference=False)
            check.report["bench"][name] = {"images_per_s": r["images_per_s"], "peak_memory_mb": r["peak_memory_mb"],
                                           "pipeline": r["pipeline"], "amp": r["amp"]}
        except Exception as e:
            check.report["bench"][name] = {"error": _error(e)}
        check.log(f"bench {name}: {check.report['bench'][name]}")
        check.save()


def recipe(check: Check, name: str, args: list[str], run_dir: Path, min_s: float = 30) -> None:
    """One config in its own process (:func:`run_recipes`)."""
    run_recipes(check, {name: (args, run_dir)}, min_s=min_s)


def run_recipes(check: Check, jobs: dict[str, tuple[list[str], Path]], min_s: float = 30) -> None:
    """Train every config at once, each in its own process and run directory, until each ends
    or the budget does (then SIGINT to those still running: the epoch in progress is lost,
    every finished one is in its run directory). Not started with less than ``min_s`` seconds
    left. Each result is written as soon as its process ends."""
    if check.left() < min_s:
        check.report["not_reached"].extend(f"recipe {name}" for name in jobs)
        check.save()
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    running, logs, start = {}, [], time.monotonic()
    for name, (args, run_dir) in jobs.items():
        resume = [f"resume={run_dir}"] if (run_dir / "last.pt").is_file() else [f"run_dir={run_dir}"]
        cmd = [sys.executable, "-m", "tailcon.cli", "train", *args, *resume, "--no-progress"]
        check.log(f"recipe {name}: {' '.join(cmd[2:])} ({check.left():.0f} s left)")
        log = open(check.out / f"{name.replace('/', '-')}.log", "a")
        logs.append(log)
        running[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        while running:
            for name, proc in list(running.items()):
                if proc.poll() is not None:
                    _record(check, name, jobs[name][1], time.monotonic() - start, proc.returncode)
                    del running[name]
            if running and check.left() <= 0:
                for proc in running.values():
                    proc.send_signal(signal.SIGINT)
                for name, proc in running.items():
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    _record(check, name, jobs[name][1], time.monotonic() - start, proc.returncode)
                running = {}
            time.sleep(0.2)
    finally:
        for proc in running.values():  # interrupted ourselves: leave no training process behind
            proc.kill()
        for log in logs:
            log.close()


def _record(check: Check, name: str, run_dir: Path, wall_s: float, returncode: int) -> None:
    result = summarise_run(run_dir, wall_s, returncode)
    alone = check.report["bench"].get(name, {}).get("images_per_s")
    result["images_per_s_alone"] = alone
    result["concurrency_cost"] = (round(1 - result["images_per_s"] / alone, 3)
                                  if alone and result["images_per_s"] else None)
    check.report["recipes"][name] = result
    check.log(f"recipe {name}: {result}")
    check.save()


def summarise_run(run_dir: Path, wall_s: float, returncode: int) -> dict:
    from tailcon.engine.logging import read_metrics
    from tailcon.rundir import RunDir

    run = RunDir(run_dir)
    records = read_metrics(run_dir)
    tested = [r for r in records if "test" in r]
    results = run.read_results()
    last = results or (tested[-1]["test"] if tested else {})
    speeds = [r["images_per_s"] for r in records if r.get("images_per_s")]
    return {"epochs_done": records[-1]["epoch"] if records else 0, "wall_s": round(wall_s, 1),
            "finished": results is not None, "exit_code": returncode,
            "images_per_s": round(sum(speeds) / len(speeds), 1) if speeds else None,
            "top1_final": last.get("top1"), "top1_best": max((r["test"]["top1"] for r in tested), default=None),
            "many": last.get("many"), "medium": last.get("medium"), "few": last.get("few")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help="CIFAR-10 (see the module docstring); not used by --dry-run")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget-s", type=float, default=480)
    p.add_argument("--dry-run", action="store_true", help="CPU, toy sizes, under a minute")
    args = p.parse_args(argv)
    check = Check(args.out, args.budget_s)
    check.log(f"gpu_check on {check.report['device']}, torch {torch.__version__}, budget {args.budget_s:.0f} s"
              f"{' (dry run)' if args.dry_run else ''}")
    if args.dry_run:
        base = ["device=cpu", "data.batch_size=16", "data.num_workers=0", "model.backbone=resnet8",
                "train.progress=false"]
        embedded = str(REPO / "tailcon" / "configs" / "digits_lt.yaml")
        toy = {"bcl": [], "logit_adjusted": []}  # two jobs side by side: the concurrent launch, at toy size
        bench_cfgs = {f"digits_lt/{m}": [embedded, f"method.name={m}", *base[1:], *extra] for m, extra in toy.items()}
        recipes = {f"digits_lt/{m}": [embedded, f"method.name={m}", "train.epochs=2", "train.max_steps_per_epoch=2",
                                      "train.eval_every=1", "device=cpu", "data.batch_size=16", "model.backbone=resnet8",
                                      "data.num_workers=0", *extra] for m, extra in toy.items()}
        steps, warmup = 2, 1
    else:
        root = prepare_cifar(args.data, args.out)
        base = ["data.name=cifar10_lt", f"data.root={root}", "data.batch_size=128", "train.progress=false",
                "data.num_workers=4"]
        recipes = {name: [config_file, f"data.root={root}", "train.eval_every=1", *extra]
                   for name, (config_file, extra) in RECIPES.items()}
        bench_cfgs = {name: args[:2] + args[3:] for name, args in recipes.items()}
        steps, warmup = 30, 10
    smoke(check, base, args.dry_run)
    bench(check, bench_cfgs, steps, warmup)
    run_recipes(check, {name: (recipe_args, args.out / "runs" / name.replace("/", "-").replace("+", "-"))
                        for name, recipe_args in recipes.items()})
    failed = [k for k, v in check.report["smoke"].items() if v != "ok"]
    check.log(f"done: {len(check.report['smoke']) - len(failed)}/{len(check.report['smoke'])} smoke tests ok"
              f"{'; failed: ' + ', '.join(failed) if failed else ''}; not reached: "
              f"{', '.join(check.report['not_reached']) or 'nothing'}")
    check.save()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
