"""Run logs: ``metrics.jsonl`` (one JSON object per epoch), TensorBoard events (the default) and,
with ``train.wandb: {project: ..., mode: online|offline|disabled}``, Weights & Biases (``pip
install "tailcon[wandb]"``; offline mode needs no network and writes under ``RUN_DIR/wandb``;
a resumed run continues the same W&B run)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import uuid
import warnings
from typing import Any, Mapping

from ..rundir import RunDir, RunDirError, atomic_write_text


class RunLogger:
    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, config: Mapping[str, Any] | None = None):
        run = RunDir(run_dir)
        self.enabled = enabled
        self.metrics_path = run.metrics
        self._tb = None
        self._wandb = None
        if enabled:
            run.path.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(run.tensorboard))
            except ImportError:
                warnings.warn("tensorboard is not installed: no TensorBoard events will be written")
            wb = ((config or {}).get("train") or {}).get("wandb") or {}
            if wb.get("project"):
                self._wandb = _start_wandb(run, wb, config)

    def truncate_after(self, epoch: int) -> None:
        """Drop records of epochs > ``epoch`` (logged by a run killed before its checkpoint)."""
        if not self.enabled or not self.metrics_path.is_file():
            return
        kept = [r for r in read_metrics(self.metrics_path.parent) if r.get("epoch", 0) <= epoch]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

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
        if self._wandb is not None:
            self._wandb.log(dict(_scalars(record)), step=int(record["epoch"]))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


class _Tee:
    """A text stream that also appends what is written to a log file; progress-bar redraws
    (lines with a carriage return) stay on the terminal."""

    def __init__(self, stream, log):
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        if "\r" not in text:
            self._log.write(text)
            if "\n" in text:
                self._log.flush()
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()
        self._log.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding, ...: the terminal's
        return getattr(self._stream, name)


@contextlib.contextmanager
def output_copied_to(path: str | os.PathLike, enabled: bool = True):
    """While inside, everything printed to stdout and stderr is also appended to ``path``
    (``RUN_DIR/train.log``), so a run keeps its own log whatever the scheduler does with the
    terminal's. Yields the log file (None when disabled)."""
    if not enabled:
        yield None
        return
    log = open(path, "a", encoding="utf-8", errors="backslashreplace")
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
    try:
        yield log
    finally:
        sys.stdout, sys.stderr = out, err
        log.close()


def _start_wandb(run: RunDir, wb: Mapping[str, Any], config: Mapping[str, Any]):
    """A W&B run for this run directory: its id is kept in RUN_DIR/wandb/run-id, so resuming
    appends to the same W&B run."""
    try:
        import wandb
    except ImportError:
        from ..config import ConfigError

        raise ConfigError('train.wandb needs the wandb package: pip install "tailcon[wandb]" (or remove '
                          "train.wandb; TensorBoard logs are written either way)") from None
    folder = run.path / "wandb"
    folder.mkdir(parents=True, exist_ok=True)
    id_file = folder / "run-id"
    run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
    atomic_write_text(id_file, run_id + "\n")
    from ..config import plain

    kwargs = {"project": wb["project"], "dir": str(run.path), "id": run_id, "resume": "allow",
              "name": config.get("name") or run.path.name, "config": plain(config)}
    if wb.get("mode"):
        kwargs["mode"] = wb["mode"]
    if wb.get("entity"):
        kwargs["entity"] = wb["entity"]
    return wandb.init(**kwargs)


def _scalars(record: Mapping[str, Any], prefix: str = ""):
    for k, v in record.items():
        if k in ("epoch", "per_class", "train_counts"):
            continue
        if isinstance(v, Mapping):
            yield from _scalars(v, f"{prefix}{k}/")
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            yield f"{prefix}{k}", float(v)


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The run's epoch records. A last line cut short (a kill or a full disk mid-write) is
    dropped with a warning naming the file and line: that epoch's checkpoint was written before
    its record, so resuming re-evaluates it. A damaged line elsewhere is an error naming them."""
    path = RunDir(run_dir).metrics
    if not path.is_file():
        return []
    lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
             if line.strip()]
    records = []
    for i, (lineno, line) in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            if i == len(lines) - 1:
                print(f"tailcon: warning: {path}:{lineno}: dropped a torn last record (a write cut short): {e}",
                      file=sys.stderr)
                break
            raise RunDirError(f"{path}:{lineno}: damaged record ({e}); only a torn last line can be dropped safely. "
                              "Repair or remove that line") from None
        records.append(record)
    return records
