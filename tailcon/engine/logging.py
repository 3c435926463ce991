"""Run logs: ``metrics.jsonl`` (one JSON object per epoch) and TensorBoard events."""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any, Mapping

from .rundir import RunDir, atomic_write_text


class RunLogger:
    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True):
        run = RunDir(run_dir)
        self.enabled = enabled
        self.metrics_path = run.metrics
        self._tb = None
        if enabled:
            run.path.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(run.tensorboard))
            except ImportError:
                warnings.warn("tensorboard is not installed: no TensorBoard events will be written")

    def truncate_after(self, epoch: int) -> None:
        """Drop records of epochs > ``epoch`` (logged by a run killed before its checkpoint)."""
        if not self.enabled or not self.metrics_path.is_file():
            return
        kept = [line for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line).get("epoch", 0) <= epoch]
        atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept))

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self._tb is not None:
            step = int(record["epoch"])
            for key, value in _scalars(record):
                self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _scalars(record: Mapping[str, Any], prefix: str = ""):
    for k, v in record.items():
        if k in ("epoch", "per_class", "train_counts"):
            continue
        if isinstance(v, Mapping):
            yield from _scalars(v, f"{prefix}{k}/")
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            yield f"{prefix}{k}", float(v)


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    path = RunDir(run_dir).metrics
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
