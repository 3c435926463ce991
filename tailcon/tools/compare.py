"""``tailcon compare``: every config at the same budget and seeds, one table.

Runs live in ``OUT/<config name>/seed<k>``; a run that finished is read back, a run that was
interrupted resumes. The table reports the **final epoch** (the unbiased figure) as mean ± std
over seeds, and beside it the best epoch, labelled with the split it was selected on: the
validation split where the dataset has one, otherwise the test split, marked as optimistic.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .. import config, resolution
from ..data import DataError
from ..engine.logging import read_metrics
from ..engine.manifest import read_manifest
from ..engine.metrics import format_pct
from ..rundir import RunDir, RunDirError, atomic_write_text
from ..engine.trainer import NonFiniteLossError

METRICS = ("top1", "many", "medium", "few", "top5", "ece")


def metric(m: Mapping[str, Any], name: str) -> Optional[float]:
    """A figure of a results/metrics record; ``ece`` is the overall calibration error."""
    value = m.get(name)
    return value.get("overall") if isinstance(value, Mapping) else value


@dataclass
class RunSpec:
    name: str
    config_path: str
    seed: int
    run_dir: Path
    cfg: dict
    skipped: list[str] = field(default_factory=list)


def plan(configs: Sequence[str], seeds: Sequence[int], overrides: Sequence[str], out: Path) -> list[RunSpec]:
    """Resolve every (config, seed). ``method.*`` overrides a method does not have (e.g.
    ``method.linear_epochs`` for CE) are left out for that config and noted; anything else
    unknown is an error as in ``tailcon train``."""
    from ..methods import get_method

    resolved = []
    names = [config.config_name(c) for c in configs]
    if len(set(names)) != len(names):
        raise config.ConfigError(f"two configs share a run name: {names}")
    for path, name in zip(configs, names):
        method_name = resolution.resolve(path, [o for o in overrides if o.startswith("method.name=")])["method"]["name"]
        known = set(get_method(method_name).defaults) | {"name"}
        kept, skipped = [], []
        for o in overrides:
            key = o.split("=", 1)[0]
            if key.startswith("method.") and key.split(".", 1)[1] not in known:
                skipped.append(key)
            else:
                kept.append(o)
        resolution.resolve(path, kept)  # every key and value checked now, not hours later
        resolved.append((path, name, kept, skipped))
    # every config's first seed first: an interrupted comparison still covers every config
    return [RunSpec(name, path, seed, out / name / f"seed{seed}",
                    resolution.resolve(path, kept + [f"seed={seed}", f"run_dir={out / name / f'seed{seed}'}"]), skipped)
            for seed in seeds for path, name, kept, skipped in resolved]


def check_reusable(specs: Sequence[RunSpec]) -> None:
    """Every run directory that already holds a run was made with the requested config (keys
    that cannot change a result excepted), with at most as many epochs: a comparison never
    shows figures of another budget under this command. Checked for all runs before any trains."""
    from ..engine.stages import config_differences

    for spec in specs:
        run = RunDir(spec.run_dir)
        if not run.config.is_file():
            continue
        saved = config.load_yaml(run.config)
        diff = config_differences(saved, spec.cfg)
        epochs, wanted = int(config.get(saved, "train.epochs", 0)), int(spec.cfg["train"]["epochs"])
        if wanted < epochs:
            diff.append(f"train.epochs: {epochs} -> {wanted}")
        if diff:
            raise config.ConfigError(f"{spec.run_dir} holds a run of another config than the one requested ("
                                + "; ".join(diff) + "): its figures would not be this comparison's. Give another "
                                "--out for this budget (more train.epochs alone continues the runs)")


def _finished(spec: RunSpec) -> bool:
    """The run has its results at the requested budget (one finished at fewer epochs has not)."""
    run = RunDir(spec.run_dir)
    if not run.results.is_file():
        return False
    wanted = config.get(spec.cfg, "train.epochs")
    return wanted is None or not run.config.is_file() or config.get(config.load_yaml(run.config), "train.epochs") == wanted


def run_all(specs: Sequence[RunSpec]) -> None:
    from ..engine import stages

    check_reusable(specs)
    for i, spec in enumerate(specs):
        run = RunDir(spec.run_dir)
        done = _finished(spec)
        print(f"tailcon compare [{i + 1}/{len(specs)}] {spec.name} seed {spec.seed}: "
              f"{'finished, reading it back' if done else 'training'} ({spec.run_dir})", flush=True)
        if spec.skipped:
            print(f"  note: {', '.join(spec.skipped)} do not apply to {spec.cfg['method']['name']}; left out")
        if done:
            continue
        run.failed.unlink(missing_ok=True)
        cfg = dict(spec.cfg)
        if run.holds_run():  # interrupted: continue it (the resume is checked against what it was)
            cfg["resume"] = str(spec.run_dir)
        try:
            stages.train(cfg)
        except (NonFiniteLossError, RunDirError, DataError, RuntimeError, ValueError) as e:
            # one bad run does not stop the others
            spec.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run.failed, f"{type(e).__name__}: {e}\n")
            print(f"  FAILED: {type(e).__name__}: {e}", flush=True)


def _mean_std(values: list[Optional[float]]) -> tuple[Optional[float], Optional[float]]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return mean, std


def _train_minutes(run_dir: Path) -> float:
    return sum(r.get("time_s", 0.0) for stage in RunDir(run_dir).stage_dirs() for r in read_metrics(stage.path)) / 60


def collect(specs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    """One row per config: final-epoch and best-epoch metrics as mean/std over its seeds."""
    rows: dict[str, dict[str, Any]] = {}
    for spec in specs:
        run = RunDir(spec.run_dir)
        res = run.read_results() if _finished(spec) else None
        if res is None:
            why = run.failed.read_text().strip() if run.failed.is_file() else "not finished"
            rows.setdefault(spec.name, {"name": spec.name, "method": spec.cfg["method"]["name"], "seeds": [],
                                        "final": {m: [] for m in METRICS}, "best": {m: [] for m in METRICS},
                                        "best_epoch": [], "selected_on": set(), "epochs": None, "minutes": [],
                                        "failed": []})["failed"].append(f"seed {spec.seed}: {why}")
            continue
        row = rows.setdefault(spec.name, {"name": spec.name, "method": spec.cfg["method"]["name"], "seeds": [],
                                          "final": {m: [] for m in METRICS}, "best": {m: [] for m in METRICS},
                                          "best_epoch": [], "selected_on": set(), "epochs": res.get("epoch"),
                                          "minutes": [], "failed": []})
        manifest = read_manifest(run.final_stage()) or {}
        if manifest.get("data_fingerprint"):
            row.setdefault("fingerprints", {})[spec.seed] = manifest["data_fingerprint"]["samples_sha256"]
        row["epochs"] = res.get("epoch")
        row["seeds"].append(spec.seed)
        for m in METRICS:
            row["final"][m].append(metric(res, m))
        best = res.get("best") or {}
        if "test" in best:
            row["selected_on"].add(best.get("selected_on", "test"))
            row["best_epoch"].append(best.get("epoch"))
            for m in METRICS:
                row["best"][m].append(metric(best["test"], m))
        row["minutes"].append(_train_minutes(spec.run_dir))
    papers = {spec.name: config.get(spec.cfg, "paper.top1") for spec in specs}
    withheld = {spec.name: config.get(spec.cfg, "paper.withheld") for spec in specs}
    sources = {spec.name: config.get(spec.cfg, "paper.source") for spec in specs}
    out = []
    for row in rows.values():
        row["paper_top1"] = papers.get(row["name"])
        row["paper_withheld"] = withheld.get(row["name"])
        row["paper_recalled"] = recalled(sources.get(row["name"]))
        row["final"] = {m: _mean_std(v) for m, v in row["final"].items()}
        row["best"] = {m: _mean_std(v) for m, v in row["best"].items()}
        row["selected_on"] = "/".join(sorted(row["selected_on"])) or "-"
        row["minutes"] = sum(row["minutes"]) / len(row["minutes"]) if row["minutes"] else 0.0
        out.append(row)
    return out


def recalled(source: Optional[str]) -> bool:
    """Whether a published figure's ``paper.source`` marks it as recalled, not read from the paper
    (``[recalled]``, ``[PAPER-r]``): such a figure is shown with ``(recalled)`` wherever it is printed."""
    return bool(source) and ("[recalled" in source or "[PAPER-r" in source)


def _paper(row: Mapping[str, Any]) -> str:
    if row.get("paper_top1") is None:
        return "-"
    return f"{row['paper_top1']:.2f}" + (" (recalled)" if row.get("paper_recalled") else "")


def _versus_paper(row: Mapping[str, Any]) -> str:
    """The mean final-epoch top-1 minus the paper's (the configs' ``paper.top1``)."""
    mean = row["final"]["top1"][0]
    return "-" if mean is None or row.get("paper_top1") is None else f"{mean - row['paper_top1']:+.2f}"


def _pm(ms: tuple[Optional[float], Optional[float]]) -> str:
    mean, std = ms  # a mean of None: the group has no class (e.g. Few on CIFAR-10-LT)
    return format_pct(mean) if mean is None or std is None else f"{mean:.2f} ± {std:.2f}"


def data_mismatch(rows: Sequence[dict[str, Any]]) -> Optional[str]:
    """A warning when the runs of one table trained on different data (manifest fingerprints)."""
    seen: dict[str, list[str]] = {}
    for r in rows:
        for seed, fp in r.get("fingerprints", {}).items():
            seen.setdefault(fp, []).append(f"{r['name']} seed {seed}")
    if len(seen) < 2:
        return None
    groups = "; ".join(f"{fp[:12]}: {', '.join(runs)}" for fp, runs in seen.items())
    return (f"WARNING: these runs trained on {len(seen)} different training sets (data fingerprints in their "
            f"manifest.json differ), so their figures are not comparable: {groups}")


def _pm_recorded(ms: tuple[Optional[float], Optional[float]]) -> str:
    """Top-5 and ECE: missing from runs made before they were recorded, not an empty group."""
    return "-" if ms[0] is None else _pm(ms)


def to_markdown(rows: Sequence[dict[str, Any]], title: str = "") -> str:
    n_seeds = max(len(r["seeds"]) for r in rows) if rows else 0
    test_selected = any("test" in r["selected_on"] for r in rows)
    best_label = "best epoch top-1 (picked on TEST: optimistic)" if test_selected else "best epoch top-1 (picked on val)"
    lines = [title] if title else []
    mismatch = data_mismatch(rows)
    if mismatch:
        lines += [f"**{mismatch}**", ""]
    lines += [f"Final epoch on the test split, mean ± std (sample std) over the seeds run (up to {n_seeds}; "
              "a single seed shows no ±). Many > 100 / Medium 20-100 / Few < 20 training images; "
              "'empty': no class in that group; ECE: expected calibration error (15 bins), lower is better; "
              "'-': not recorded by the run.", "",
              f"| config | method | seeds | top-1 | Many | Medium | Few | top-5 | ECE | {best_label} | paper top-1 | "
              "final - paper | train min/run |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -(r["final"]["top1"][0] or -1)):
        f = r["final"]
        if not r["seeds"]:
            lines.append(f"| {r['name']} | {r['method']} | 0 | not run | | | | | | | {_paper(r)} | | |")
            continue
        lines.append(f"| {r['name']} | {r['method']} | {len(r['seeds'])} | {_pm(f['top1'])} | {_pm(f['many'])} | "
                     f"{_pm(f['medium'])} | {_pm(f['few'])} | {_pm_recorded(f['top5'])} | {_pm_recorded(f['ece'])} | "
                     f"{_pm(r['best']['top1'])} | {_paper(r)} | {_versus_paper(r)} | {r['minutes']:.1f} |")
    no_paper = [f"- {r['name']}: " + (r["paper_withheld"] if r.get("paper_withheld") else
                                      "its config names no published result")
                for r in rows if r.get("paper_top1") is None]
    if no_paper:
        lines += ["", "Empty paper columns:", *no_paper]
    failures = [f"- {r['name']}: {f}" for r in rows for f in r.get("failed", [])]
    if failures:
        lines += ["", "Runs without a result (not in the means above):", *failures]
    if test_selected:
        lines += ["", "The best-epoch column is selected on the test split itself (the dataset has no validation "
                      "split): it is an optimistic figure, shown only because papers report it. The final-epoch "
                      "columns are the honest comparison."]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    header = ["config", "method", "seeds", "epochs"]
    for m in METRICS:
        header += [f"final_{m}_mean", f"final_{m}_std"]
    header += ["best_top1_mean", "best_top1_std", "best_selected_on", "paper_top1", "final_top1_minus_paper",
               "train_minutes_per_run", "failed"]
    w.writerow(header)
    for r in rows:
        line = [r["name"], r["method"], " ".join(map(str, r["seeds"])), r["epochs"] or ""]
        for m in METRICS:
            line += [_fmt(x) for x in r["final"][m]]
        diff = _versus_paper(r)
        line += [_fmt(x) for x in r["best"]["top1"]] + [r["selected_on"], _fmt(r.get("paper_top1")),
                                                        "" if diff == "-" else diff, f"{r['minutes']:.2f}",
                                                        "; ".join(r.get("failed", []))]
        w.writerow(line)
    return buf.getvalue()


def _fmt(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.4f}"


def is_run_dir(path: str | Path) -> bool:
    """A directory that holds a run (its ``config.yaml``), not a config file."""
    return Path(path).is_dir() and RunDir(path).config.is_file()


def specs_from_runs(paths: Sequence[str]) -> tuple[list[RunSpec], list[str]]:
    """Finished or not, the runs in ``paths`` (run directories; ``*`` patterns are expanded here
    too), grouped into one row per recipe: runs that differ only in ``seed`` (and plumbing) share a
    row; runs of one config name at different recipes get rows ``name``, ``name#2``, ... and a note
    naming the keys that differ from the first. Returns (specs, notes)."""
    import glob

    dirs: list[str] = []
    for p in paths:
        matched = sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
        if not matched:
            raise config.ConfigError(f"{p} matches no run directory")
        dirs += matched
    groups: list[tuple[str, dict, list[RunSpec]]] = []  # (row name, first config, specs)
    notes = []
    for d in dirs:
        if not is_run_dir(d):
            raise config.ConfigError(f"{d} is not a run directory (no config.yaml in it); tailcon compare takes "
                                     "run directories, or configs to train")
        cfg = config.complete(config.load_yaml(RunDir(d).config))
        name = cfg["name"] or Path(d).name  # complete() gave every key, name included
        spec = RunSpec(name, str(RunDir(d).config), int(cfg["seed"]), Path(d), cfg)
        same_name = [g for g in groups if g[2][0].name == name]
        for row_name, first, specs in same_name:
            if not resolution.recipe_differences(first, cfg):
                if any(s.seed == spec.seed for s in specs):
                    notes.append(f"{d}: a second run of {row_name} with seed {spec.seed}; both are in its mean")
                spec.name = row_name
                specs.append(spec)
                break
        else:
            row_name = name if not same_name else f"{name}#{len(same_name) + 1}"
            if same_name:
                diff = resolution.recipe_differences(same_name[0][1], cfg)
                notes.append(f"{row_name} ({d}) is another recipe than {name}: " + "; ".join(diff))
            spec.name = row_name
            groups.append((row_name, cfg, [spec]))
    return [s for _, _, specs in groups for s in specs], notes


def compare_runs(paths: Sequence[str], out: str | Path) -> list[dict[str, Any]]:
    """``tailcon compare RUN_DIR...``: the table of runs that exist, seeds of one recipe grouped;
    nothing is trained or resumed."""
    specs, notes = specs_from_runs(paths)
    rows = collect(specs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = to_markdown(rows, title=f"Comparison of existing runs: `tailcon compare {' '.join(paths)}`\n")
    if notes:
        md += "\nRows:\n" + "".join(f"- {n}\n" for n in notes)
    atomic_write_text(out / "compare.md", md)
    atomic_write_text(out / "compare.csv", to_csv(rows))
    print(md)
    print(f"tailcon compare: wrote {out / 'compare.md'} and {out / 'compare.csv'}")
    return rows


def compare(configs: Sequence[str], seeds: Sequence[int], overrides: Sequence[str], out: str | Path,
            train_runs: bool = True) -> list[dict[str, Any]]:
    out = Path(out)
    specs = plan(configs, seeds, overrides, out)
    check_reusable(specs)
    if train_runs:
        run_all(specs)
    rows = collect(specs)
    out.mkdir(parents=True, exist_ok=True)
    command = "tailcon compare " + " ".join(configs) + f" --seeds {' '.join(map(str, seeds))} --out {out} " + \
              " ".join(overrides)
    md = to_markdown(rows, title=f"Comparison: `{command.strip()}`\n")
    atomic_write_text(out / "compare.md", md)
    atomic_write_text(out / "compare.csv", to_csv(rows))
    print(md)
    mismatch = data_mismatch(rows)
    if mismatch:
        print(f"tailcon compare: {mismatch}", file=sys.stderr)
    print(f"tailcon compare: wrote {out / 'compare.md'} and {out / 'compare.csv'}")
    return rows
