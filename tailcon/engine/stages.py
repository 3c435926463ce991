"""``train(cfg)``: claim the run directory, check what a resume continues, run the stages.

A new run never writes into a directory that already holds one; a resumed run continues only
what it is: same method, hyperparameters, model and data (keys that cannot change the result so
far, :func:`resume_safe_keys`, excepted). A method with several stages (``Method.stages``)
runs them one after the other in ``RUN_DIR/<stage>``; a finished stage is skipped on resume.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping, Optional

from .. import config, distributed, resolution
from ..data import DataError
from ..methods import get_method
from .context import RunContext
from .device import resolve_amp, resolve_device
from .logging import output_copied_to
from .trainer import Trainer
from ..rundir import (CHECKPOINTS, TENSORBOARD, TRAINING_FILES, RunDir, RunDirError, RunLock, atomic_write_text,
                     load_checkpoint, remove_stale_temporaries, run_to_resume, unique_run_dir)

def resume_safe_keys(method_name: str) -> frozenset[str]:
    """The keys a resumed run may change: the schema's resume-safe keys and the method's own
    (:attr:`tailcon.methods.Method.resume_safe_keys`); none of them can change what was computed
    so far."""
    method = get_method(method_name)
    return frozenset(config.keys_where(resume_safe=True)) | {f"method.{k}" for k in method.resume_safe_keys}


def config_differences(saved: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """``key: saved -> requested`` for every key that differs and may not."""
    a, b = config.flatten(config.plain(config.complete(saved))), config.flatten(config.plain(config.complete(requested)))
    allowed = resume_safe_keys(b["method.name"])
    show = lambda flat, k: repr(flat[k]) if k in flat else "(not set)"
    return [f"{k}: {show(a, k)} -> {show(b, k)}" for k in sorted(set(a) | set(b))
            if k not in allowed and (k not in a or k not in b or a[k] != b[k])]


def check_resumable(saved: Mapping[str, Any], requested: Mapping[str, Any], epochs_done: int, where: Path) -> None:
    diff = config_differences(saved, requested)
    if diff:
        raise RunDirError(f"cannot resume {where}: the requested config differs from the run's in "
                          + "; ".join(diff) + ". Only keys that cannot change the result so far may change ("
                          + ", ".join(sorted(resume_safe_keys(requested["method"]["name"]))) + "); start a new run with another run_dir= instead")
    if int(requested["train"]["epochs"]) < epochs_done:
        raise RunDirError(f"cannot resume {where}: train.epochs={requested['train']['epochs']} but the run has "
                          f"already trained {epochs_done} epochs")


def _saved_state(run: RunDir, resume: Path) -> tuple[Optional[dict], int, Optional[dict]]:
    """The config a run was started with, its epochs done, and the checkpoint a resume continues
    (a staged run: the whole command's config and no checkpoint; an ordinary one: its
    checkpoint's, else its config.yaml)."""
    if run.stage_names():
        return (config.load_yaml(run.config) if run.config.is_file() else None), 0, None
    ckpt_path = resume if resume.is_file() else run.checkpoint("last")
    if ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        return ckpt["config"], int(ckpt["epoch"]), ckpt
    return (config.load_yaml(run.config) if run.config.is_file() else None), 0, None


def claim_run_dir(cfg: dict[str, Any]) -> tuple[Optional[RunLock], Optional[dict]]:
    """Set ``cfg["run_dir"]`` and, on the main process, lock it; returns the lock and (main
    process) the checkpoint a resume continues, read once for the check and for the run. A new
    run into a directory that holds one, a locked directory, and a resume that would continue
    something else are refused before anything is written."""
    lock, checkpoint, error = None, None, None
    if distributed.is_main_process():
        try:
            lock, checkpoint = _claim(cfg)
        except (RunDirError, config.ConfigError) as e:
            error = e
    # every rank stops together, and continues (or starts) what rank 0 decided
    cfg["run_dir"], cfg["resume"], error = distributed.broadcast_object((cfg["run_dir"], cfg["resume"], error))
    if error is not None:
        raise error
    return lock, checkpoint


def _claim(cfg: dict[str, Any]) -> tuple[RunLock, Optional[dict]]:
    if cfg["resume"] == "auto":  # continue run_dir if it holds a run, else start it
        run = RunDir(cfg["run_dir"])
        cfg["resume"] = str(run.path) if run.holds_run() else None
        if cfg["resume"]:
            print(f"tailcon: resume=auto: continuing the run in {run.path}")
    if cfg["resume"]:
        resume = Path(cfg["resume"])
        run = run_to_resume(resume)
        cfg["run_dir"] = str(run.path)
        saved, done, checkpoint = _saved_state(run, resume)  # checkpoints are written atomically: safe unlocked
        if saved is not None:
            check_resumable(saved, cfg, done, run.path)  # a refused resume touches nothing, not even the lock
        lock = run.lock().acquire()
        _clean_stale(run)
        return lock, checkpoint
    run = RunDir(cfg["run_dir"] or unique_run_dir(cfg["name"]))
    cfg["run_dir"] = str(run.path)
    if run.holds_run():  # checked before the lock file is made: a refused run changes nothing
        raise RunDirError(_occupied(run))
    lock = run.lock().acquire()
    if run.holds_run():  # another process got there between the check and the lock
        lock.release()
        raise RunDirError(_occupied(run))
    return lock, None


def remove_unstarted(run: RunDir) -> None:
    """A fresh run that failed before its first checkpoint (bad data, a backbone that does not
    fit the images, an interrupt in epoch 1) leaves nothing behind: the files it wrote are
    removed, so the same command can simply be run again. Anything with a checkpoint is kept."""
    dirs = run.stage_dirs()
    if any(d.checkpoint(w).is_file() for d in dirs for w in CHECKPOINTS):
        return
    for d in dirs + ([run] if dirs != [run] else []):
        if not d.path.is_dir():
            continue
        for name in TRAINING_FILES + (TENSORBOARD, "wandb"):
            p = d.path / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            elif p.is_file() or p.is_symlink():
                p.unlink(missing_ok=True)
        if d is not run and not any(d.path.iterdir()):
            d.path.rmdir()


def _clean_stale(run: RunDir) -> None:
    for p in remove_stale_temporaries(run):
        print(f"tailcon: removed {p}, a temporary file left by a killed write")


def _occupied(run: RunDir) -> str:
    held = sorted(p.name for p in run.path.iterdir() if p.name != ".lock")
    shown = ", ".join(held[:6]) + (", ..." if len(held) > 6 else "")
    return (f"run directory {run.path} already holds a run ({shown}); nothing was changed. To continue it: "
            f"resume={run.path}; to start a new run: give a fresh run_dir= (or leave run_dir unset for "
            f"runs/<date>-<name>)")


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    """Train from a resolved config; ``cfg['resume']`` continues a run directory or checkpoint.
    The config is validated, the device and precision resolved, the run directory claimed and the
    resumed checkpoint read here, once; the trainer gets them as a :class:`RunContext`."""
    distributed.init_from_env()  # under torchrun: join the process group
    cfg = resolution.validate(cfg)
    elastic_resume(cfg)
    device = resolve_device(cfg["device"])  # before any directory is touched
    amp = resolve_amp(device, cfg["train"]["amp"])
    lock, checkpoint = claim_run_dir(cfg)
    try:
        with output_copied_to(RunDir(cfg["run_dir"]).log, enabled=distributed.is_main_process()) as log:
            try:
                stages = get_method(cfg["method"]["name"]).stages(cfg)
                if not stages:
                    result = _train_single(RunContext(cfg, device, amp, checkpoint, lock))
                    distributed.barrier()
                    return result
                return _train_stages(RunContext(cfg, device, amp, None, lock), stages)
            except Exception as e:
                if isinstance(e, DataError) and any(d.checkpoint("last").is_file()
                                                    for d in RunDir(cfg["run_dir"]).stage_dirs()):
                    e = DataError(f"{e}. Once the data is fixed, tailcon train resume={cfg['run_dir']} continues the "
                                  "run from its last checkpoint")
                if log is not None:  # the error the command line prints, in the run's log too
                    log.write(f"tailcon: error: {type(e).__name__}: {e}\n")
                if isinstance(e, DataError):
                    raise e from None
                raise
    except BaseException:
        if not cfg["resume"] and distributed.is_main_process():
            remove_unstarted(RunDir(cfg["run_dir"]))
        raise
    finally:
        if lock is not None:
            lock.release()


def elastic_resume(cfg: dict[str, Any]) -> None:
    """torchrun ``--max-restarts N`` restarts every worker after one fails; the restarted
    workers must continue the run, not start another. So a run under restarts needs a fixed
    ``run_dir``, and a restarted worker (``TORCHELASTIC_RESTART_COUNT`` > 0) resumes as with
    ``resume=auto``."""
    import os

    if cfg["resume"] == "auto" and not cfg["run_dir"]:
        raise config.ConfigError("resume=auto continues the run in run_dir=, which is not set: give run_dir=DIR")
    if int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0 and not cfg["run_dir"]:
        raise config.ConfigError("torchrun --max-restarts: give run_dir=DIR, so that restarted workers continue the run "
                            "(a default run_dir is new at every start)")
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0 and not cfg["resume"]:
        cfg["resume"] = "auto"


def _train_stages(context: RunContext, stages: list[tuple[str, dict]]) -> dict[str, Any]:
    cfg = context.cfg
    root = RunDir(cfg["run_dir"])
    main = distributed.is_main_process()
    if main:
        root.path.mkdir(parents=True, exist_ok=True)
        root.write_stage_names([name for name, _ in stages])
        atomic_write_text(root.config, config.dump({**cfg, "resume": None}))
    result: dict[str, Any] = {}
    for name, overrides in stages:
        stage = root.stage(name)
        stage_cfg = config.merge(cfg, overrides)
        stage_cfg["run_dir"] = str(stage.path)
        stage_cfg["resume"] = str(stage.path) if stage.checkpoint("last").is_file() else None
        stage_cfg = resolution.validate(stage_cfg)  # a stage's config is a config of its own
        checkpoint = load_checkpoint(stage.checkpoint("last")) if stage_cfg["resume"] else None
        if checkpoint is not None:
            check_resumable(checkpoint["config"], stage_cfg, int(checkpoint["epoch"]), stage.path)
        if main:
            print(f"tailcon: stage {name!r} -> {stage.path}")
        result = _train_single(RunContext(stage_cfg, context.device, context.amp, checkpoint, context.lock))
        distributed.barrier()  # the stage's checkpoints are written before any rank moves on
    final = root.stage(stages[-1][0])
    if main and final.results.is_file():
        atomic_write_text(root.results, final.results.read_text())
    return result


def _train_single(context: RunContext) -> dict[str, Any]:
    cfg = context.cfg
    if context.resume_from is None and cfg["resume"]:  # the other ranks (rank 0 read it when claiming)
        resume = Path(cfg["resume"])
        ckpt_path = resume if resume.is_file() else RunDir(cfg["run_dir"]).checkpoint("last")
        if ckpt_path.is_file():
            context.resume_from = load_checkpoint(ckpt_path)
    return Trainer(context).fit()
