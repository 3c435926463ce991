"""tailcon beside the LDAM-DRW authors' own CIFAR code, on the same files, budget and seeds.

    python benchmarks/reference_parity.py --reference REF --data-root DIR --loss ldam_drw \
        --epochs 40 --seeds 0 1 2 --out parity/ldam-e40 [--jobs 2] [--side both] [KEY=VALUE ...]

``REF`` is your own copy of kaidic/LDAM-DRW (``cifar_train.py``, ``imbalance_cifar.py``, ...)
made to run where you are (on a CPU: ``.cuda()`` calls removed, a ``--data_root`` argument, the
MD5 check skipped if your files are a conversion; for ``--epochs`` other than 200 its schedule's
epoch numbers scaled by E/200, rounded, at least 1). Nothing of it is shipped or copied here: this
script only runs it. ``DIR`` holds ``cifar-10-batches-py/``, read by both codes.

Per seed, the tailcon config (``cifar10_lt/ldam_drw`` or ``cifar10_lt/ce``) runs with the same
schedule (warm-up, lr drops and the DRW start scaled as above) and the reference command runs with
the same seed. Both checkpoint every epoch, so a killed comparison continues where it stopped:
run the same command again. ``KEY=VALUE`` arguments go to tailcon only (e.g. ``train.amp=bf16``);
``--side tailcon`` runs tailcon alone (e.g. to compare two tailcon settings with ``--against``).

Writes ``OUT/parity.md`` (final-epoch top-1, Many / Medium / Few and per-class accuracy, mean ± std
per side, the difference of the means with a 95% Welch interval), ``OUT/parity.json`` and
``OUT/curves.png`` (per-epoch test accuracy and training loss of both sides). The reference's
training loss is its own per-epoch mean (TensorBoard ``loss/train``), tailcon's the epoch mean of
``metrics.jsonl``: both are means over the epoch's batches weighted by batch size.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PAIRS = {  # tailcon config, the reference's arguments
    "ldam_drw": ("cifar10_lt/ldam_drw", ["--loss_type", "LDAM", "--train_rule", "DRW"]),
    "ce": ("cifar10_lt/ce", ["--loss_type", "CE", "--train_rule", "None"]),
}
GROUPS = ("many", "medium", "few")


def scaled_schedule(epochs: int) -> dict[str, int]:
    """The LDAM-DRW schedule (warm-up 5, lr x0.01 after 160 and 180, DRW from 160) at ``epochs``."""
    warm, first, second = (max(1, round(x * epochs / 200)) for x in (5, 160, 180))
    return {"warmup": warm, "first": first, "second": second, "drw": first}


def tailcon_overrides(loss: str, epochs: int, extra: Sequence[str]) -> list[str]:
    s = scaled_schedule(epochs)
    out = [f"train.epochs={epochs}", f"optim.warmup_epochs={s['warmup']}", f"optim.milestones=[{s['first']},{s['second']}]"]
    if loss == "ldam_drw":
        out.append(f"method.drw_epoch={s['drw']}")
    return out + list(extra)


# ---- running ------------------------------------------------------------------------------------
def tailcon_job(args, seed: int) -> tuple[list[str], Path, Path]:
    run_dir = Path(args.out) / "tailcon" / f"seed{seed}"
    cmd = [sys.executable, "-m", "tailcon", "train", PAIRS[args.loss][0], f"data.root={args.data_root}",
           f"run_dir={run_dir}", f"seed={seed}", "resume=auto", "--no-progress",
           *tailcon_overrides(args.loss, args.epochs, args.overrides)]
    return cmd, ROOT, run_dir / "parity-stdout.log"


def reference_store(args, seed: int) -> str:
    loss_type, rule = PAIRS[args.loss][1][1], PAIRS[args.loss][1][3]
    return "_".join(["cifar10", "resnet32", loss_type, rule, "exp", "0.01", f"parity-s{seed}"])


def reference_job(args, seed: int) -> tuple[list[str], Path, Path]:
    out = (Path(args.out) / "reference").resolve()
    ckpt = out / "checkpoint" / reference_store(args, seed) / "ckpt.pth.tar"
    cmd = [sys.executable, "cifar_train.py", *PAIRS[args.loss][1], "--imb_type", "exp", "--imb_factor", "0.01",
           "--data_root", str(Path(args.data_root).resolve()), "--epochs", str(args.epochs), "--seed", str(seed),
           "--workers", "1", "--exp_str", f"parity-s{seed}", "--root_log", str(out / "log"),
           "--root_model", str(out / "checkpoint")]
    if ckpt.is_file():
        cmd += ["--resume", str(ckpt)]
    return cmd, Path(args.reference).resolve(), out / f"seed{seed}-stdout.log"


def tailcon_done(args, seed: int) -> bool:
    run_dir = Path(args.out) / "tailcon" / f"seed{seed}"
    results = run_dir / "results.json"
    return results.is_file() and json.loads(results.read_text()).get("epoch") == args.epochs


def reference_epochs_done(args, seed: int) -> int:
    ckpt = Path(args.out) / "reference" / "checkpoint" / reference_store(args, seed) / "ckpt.pth.tar"
    if not ckpt.is_file():
        return 0
    import torch

    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"])


def run(cmd: list[str], cwd: Path, log: Path, threads: int) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with open(log, "a") as f:  # appended: a resumed run keeps the earlier attempts' lines
        f.write(f"\n# {' '.join(cmd)}\n")
        f.flush()
        return subprocess.call(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env)


def run_all(args) -> None:
    jobs = []
    for seed in args.seeds:  # both sides of a seed next to each other: a cut-short comparison stays paired
        if args.side in ("both", "tailcon") and not tailcon_done(args, seed):
            jobs.append(("tailcon", seed, tailcon_job(args, seed)))
        if args.side in ("both", "reference") and reference_epochs_done(args, seed) < args.epochs:
            jobs.append(("reference", seed, reference_job(args, seed)))
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)

    def one(job):
        side, seed, (cmd, cwd, log) = job
        print(f"parity: {side} seed {seed} ({log})", flush=True)
        rc = run(cmd, cwd, log, threads)
        print(f"parity: {side} seed {seed} exited {rc}", flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, jobs))


# ---- reading back -------------------------------------------------------------------------------
def read_tailcon(run_dir: Path) -> Optional[dict[str, Any]]:
    """Final figures and per-epoch curves of a finished tailcon run, or None."""
    results = run_dir / "results.json"
    if not results.is_file():
        return None
    from tailcon.engine.logging import read_metrics

    r = json.loads(results.read_text())
    curves = read_metrics(run_dir)
    return {"top1": r["top1"], **{g: r.get(g) for g in GROUPS}, "per_class": r["per_class"], "epoch": r["epoch"],
            "train_counts": r.get("train_counts"),
            "test_top1": {int(c["epoch"]): c["test"]["top1"] for c in curves if "test" in c},
            "train_loss": {int(c["epoch"]): c["loss"] for c in curves}}


_EPOCH = re.compile(r"^Epoch: \[(\d+)\]")
_RESULT = re.compile(r"^val Results: Prec@1 ([\d.]+)")
_CLASSES = re.compile(r"^val Class Accuracy: (\[.*\])")
_COUNTS = re.compile(r"^\[(\d+(?:, \d+)*)\]$")


def parse_reference_stdout(text: str) -> dict[str, Any]:
    """Per-epoch test top-1 and per-class accuracy (%) from the reference's printed lines; an
    epoch repeated after a resume keeps its last evaluation."""
    epoch, test, per_class, counts = None, {}, {}, None
    for line in text.splitlines():
        if (m := _EPOCH.match(line)):
            epoch = int(m.group(1)) + 1
        elif (m := _RESULT.match(line)) and epoch is not None:
            test[epoch] = float(m.group(1))
        elif (m := _CLASSES.match(line)) and epoch is not None:
            per_class[epoch] = [100 * float(a) for a in ast.literal_eval(m.group(1))]
        elif counts is None and (m := _COUNTS.match(line.strip())):
            counts = [int(n) for n in m.group(1).split(", ")]
    return {"test_top1": test, "per_class": per_class, "train_counts": counts}


def reference_losses(log_dir: Path) -> dict[int, float]:
    """The reference's per-epoch mean training loss from its TensorBoard files (1-based epochs)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not log_dir.is_dir():
        return {}
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if "loss/train" not in acc.Tags().get("scalars", []):
        return {}
    return {int(e.step) + 1: float(e.value) for e in sorted(acc.Scalars("loss/train"), key=lambda e: e.wall_time)}


def read_reference(args, seed: int) -> Optional[dict[str, Any]]:
    if reference_epochs_done(args, seed) < args.epochs:
        return None
    _, _, log = reference_job(args, seed)
    parsed = parse_reference_stdout(log.read_text(errors="replace"))
    last = args.epochs
    if last not in parsed["per_class"]:
        return None
    per_class, counts = parsed["per_class"][last], parsed["train_counts"]
    groups = group_means(per_class, counts)
    losses = reference_losses(Path(args.out) / "reference" / "log" / reference_store(args, seed))
    return {"top1": parsed["test_top1"][last], **groups, "per_class": per_class, "epoch": last,
            "train_counts": counts, "test_top1": parsed["test_top1"], "train_loss": losses}


def group_means(per_class: Sequence[float], counts: Sequence[int]) -> dict[str, Optional[float]]:
    """Many / Medium / Few as tailcon computes them: the mean per-class accuracy of each group."""
    from tailcon.engine.metrics import shot_groups

    acc = np.asarray(per_class, dtype=float)
    return {g: (float(acc[mask].mean()) if mask.any() else None) for g, mask in shot_groups(counts).items()}


# ---- statistics and the table -------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    mean = float(np.mean(vals))
    return mean, (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Optional[tuple[float, float, float]]:
    """(difference of means a - b, low, high) of a Welch t interval; None with fewer than 2 per side."""
    a, b = np.asarray([v for v in a if v is not None]), np.asarray([v for v in b if v is not None])
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = float(a.mean() - b.mean())
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * se
    return diff, diff - half, diff + half


def _fmt(ms: tuple[Optional[float], Optional[float]]) -> str:
    mean, std = ms
    if mean is None:
        return "empty"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _diff(a: Sequence[float], b: Sequence[float]) -> str:
    ma, mb = mean_std(a)[0], mean_std(b)[0]
    if ma is None or mb is None:
        return "-"
    ci = welch_interval(a, b)
    return f"{ma - mb:+.2f}" + ("" if ci is None else f" [{ci[1]:+.2f}, {ci[2]:+.2f}]")


def table(sides: dict[str, list[dict[str, Any]]], names: Sequence[str], title: str) -> str:
    """The parity table: one row per figure, a column per side, and the difference."""
    (a_name, a), (b_name, b) = sides.items()
    lines = [title, "", f"Final epoch on the test split, mean ± std (sample std) over seeds ({a_name}: {len(a)}, "
             f"{b_name}: {len(b)}); difference {a_name} - {b_name} with a 95% Welch interval where both sides "
             "have 2 or more seeds.", "",
             f"| figure | {a_name} | {b_name} | difference |", "|---|---|---|---|"]
    rows = [("top-1", "top1")] + [(g.capitalize(), g) for g in GROUPS]
    for label, key in rows:
        va, vb = [r[key] for r in a], [r[key] for r in b]
        lines.append(f"| {label} | {_fmt(mean_std(va))} | {_fmt(mean_std(vb))} | {_diff(va, vb)} |")
    num_classes = len(a[0]["per_class"]) if a else len(b[0]["per_class"]) if b else 0
    for c in range(num_classes):
        va, vb = [r["per_class"][c] for r in a], [r["per_class"][c] for r in b]
        lines.append(f"| {names[c] if c < len(names) else c} | {_fmt(mean_std(va))} | {_fmt(mean_std(vb))} | "
                     f"{_diff(va, vb)} |")
    by_seed = {r["seed"]: r for r in b}
    gaps = [(ra["seed"], _mean_loss_gap(ra, by_seed[ra["seed"]])) for ra in a if ra["seed"] in by_seed]
    gaps = [(seed, g) for seed, g in gaps if g is not None]
    if gaps:
        lines += ["", f"Training loss, {a_name} - {b_name}, mean over the epochs of the runs of one seed: "
                      f"{np.mean([g for _, g in gaps]):+.3f} (" + ", ".join(f"seed {seed}: {g:+.3f}" for seed, g in gaps)
                  + ")."]
    return "\n".join(lines) + "\n"


def _mean_loss_gap(a: dict[str, Any], b: dict[str, Any]) -> Optional[float]:
    common = sorted(set(a["train_loss"]) & set(b["train_loss"]))
    return float(np.mean([a["train_loss"][e] - b["train_loss"][e] for e in common])) if common else None


def plot(sides: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for (name, runs), colour in zip(sides.items(), ("tab:blue", "tab:orange")):
        for i, r in enumerate(runs):
            for ax, key in ((acc_ax, "test_top1"), (loss_ax, "train_loss")):
                xs = sorted(r[key])
                ax.plot(xs, [r[key][e] for e in xs], color=colour, lw=1, alpha=0.8,
                        label=name if i == 0 else None)
    acc_ax.set(xlabel="epoch", ylabel="test top-1 (%)", title="test accuracy per epoch")
    loss_ax.set(xlabel="epoch", ylabel="training loss (epoch mean)", title="training loss per epoch")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def collect(args) -> dict[str, list[dict[str, Any]]]:
    sides: dict[str, list[dict[str, Any]]] = {"tailcon": [], "reference": []}
    for seed in args.seeds:
        t = read_tailcon(Path(args.out) / "tailcon" / f"seed{seed}")
        if t is not None:
            sides["tailcon"].append({**t, "seed": seed})
        if args.against is None:
            r = read_reference(args, seed)
            if r is not None:
                sides["reference"].append({**r, "seed": seed})
    if args.against is not None:  # a second tailcon comparison directory in place of the reference
        label = f"tailcon ({Path(args.against).name})"
        sides = {"tailcon": sides["tailcon"], label: []}
        for seed in args.seeds:
            t = read_tailcon(Path(args.against) / "tailcon" / f"seed{seed}")
            if t is not None:
                sides[label].append({**t, "seed": seed})
    return sides


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", help="your copy of the LDAM-DRW code, made to run here (see above)")
    p.add_argument("--data-root", required=True, help="the folder holding cifar-10-batches-py/")
    p.add_argument("--loss", choices=sorted(PAIRS), default="ldam_drw")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", required=True)
    p.add_argument("--jobs", type=int, default=1, help="processes at once (threads: cores / jobs each)")
    p.add_argument("--threads", type=int, help="intra-op threads per process (default: cores / jobs)")
    p.add_argument("--side", choices=("both", "tailcon", "reference"), default="both")
    p.add_argument("--against", help="compare with the tailcon runs of another OUT instead of the reference")
    p.add_argument("--table-only", action="store_true", help="read back what exists; train nothing")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE for tailcon only (e.g. train.amp=bf16)")
    args = p.parse_args(argv)
    if args.side != "tailcon" and args.against is None and not args.reference:
        p.error("--reference is needed to run or read the authors' code (or --side tailcon --against OUT)")
    if args.reference and not (Path(args.reference) / "cifar_train.py").is_file():
        p.error(f"--reference {args.reference} has no cifar_train.py")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        run_all(args)
    sides = collect(args)
    s = scaled_schedule(args.epochs)
    title = (f"# {args.loss} on CIFAR-10-LT IF100, {args.epochs} epochs (warm-up {s['warmup']}, lr x0.01 after "
             f"{s['first']} and {s['second']}{', DRW from ' + str(s['drw']) if args.loss == 'ldam_drw' else ''})"
             + (f"; tailcon with {' '.join(args.overrides)}" if args.overrides else ""))
    md = table(sides, CIFAR10_NAMES, title)
    (out / "parity.md").write_text(md)
    (out / "parity.json").write_text(json.dumps({"args": vars(args), "sides": sides}, indent=1, default=str))
    if any(sides.values()):
        plot(sides, out / "curves.png", title.lstrip("# "))
    print(md)
    print(f"parity: wrote {out / 'parity.md'}, {out / 'parity.json'}, {out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
