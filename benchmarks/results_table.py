"""Markdown table of finished runs: final-epoch top-1 / Many / Medium / Few, train time, images/s.

    python benchmarks/results_table.py runs/short-r8-e4-*

A staged run (SupCon, DSCL) sums the time of its stages and reports its last stage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tailcon.engine.logging import read_metrics
from tailcon.engine.metrics import format_pct


def run_stats(run: Path) -> tuple[dict, float, float]:
    stages = json.loads((run / "stages.json").read_text()) if (run / "stages.json").is_file() else None
    dirs = [run / s for s in stages] if stages else [run]
    records = [r for d in dirs for r in read_metrics(d)]
    train_s = sum(r["time_s"] for r in records)
    images = sum(r["images"] for r in records)
    return json.loads((run / "results.json").read_text()), train_s, images / max(train_s, 1e-9)


def main(paths: list[str]) -> None:
    print("| run | top-1 | Many | Medium | Few | train time | train img/s |")
    print("|---|---|---|---|---|---|---|")
    for p in paths:
        run = Path(p)
        if not (run / "results.json").is_file():
            print(f"| {run.name} | (not finished) | | | | | |")
            continue
        res, train_s, ips = run_stats(run)
        cells = " | ".join(format_pct(res.get(k)) for k in ("top1", "many", "medium", "few"))
        print(f"| {run.name} | {cells} | {train_s / 60:.1f} min | {ips:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
