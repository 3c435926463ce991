"""``train(cfg)``: claim the run directory, check what a resume continues, run the stages.

A new run never writes into a directory that already holds one; a resumed run continues only
what it is: same method, hyperparameters, model and data (keys that cannot change the result so
far, :data:`RESUME_MAY_DIFFER`, excepted). A method with several stages (``Method.stages``)
runs them one after the other in ``RUN_DIR/<stage>``; a finished stage is skipped on resume.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping, Optional

from .. import config, resolution
from .. import distributed
from ..methods import get_method
from .device import resolve_amp, resolve_device
from .logging import output_copied_to
from ..rundir import (CHECKPOINTS, TENSORBOARD, TRAINING_FILES, RunDir, RunDirError, RunLock, atomic_write_text,
                     load_checkpoint, remove_stale_temporaries, run_dir_of, unique_run_dir)

# Keys a resumed run may change: none of them can change what was computed so far.
RESUME_MAY_DIFFER = frozenset({
    "custom_imports",  # where a method's code comes from; the method and its keys are compared
    "paper.top1", "paper.many", "paper.medium", "paper.few", "paper.source",  # what the run is compared with
    "name", "run_dir", "resume", "device", "data.root", "data.download", "data.num_workers",
    "model.pretrained",  # read by fresh runs only: a resumed run has the weights in its checkpoint
    "train.wandb.project", "train.wandb.mode", "train.wandb.entity",  # where the logs also go
    "data.eval_batch_size", "data.max_image_pixels", "train.progress", "train.log_every", "train.eval_every",
    "train.epochs",  # extending; fewer than the epochs already trained is refused
    "method.init_from",  # a stage that has started holds those weights in its own checkpoint
})


def config_differences(saved: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """``key: saved -> requested`` for every key that differs and may not."""
    a, b = config.flatten(config.plain(config.complete(saved))), config.flatten(config.plain(config.complete(requested)))
    show = lambda flat, k: repr(flat[k]) if k in flat else "(not set)"
    return [f"{k}: {show(a, k)} -> {show(b, k)}" for k in sorted(set(a) | set(b))
            if k not in RESUME_MAY_DIFFER and (k not in a or k not in b or a[k] != b[k])]


def check_resumable(saved: Mapping[str, Any], requested: Mapping[str, Any], epochs_done: int, where: Path) -> None:
    diff = config_differences(saved, requested)
    if diff:
        raise RunDirError(f"cannot resume {where}: the requested config differs from the run's in "
                          + "; ".join(diff) + ". Only keys that cannot change the result so far may change ("
                          + ", ".join(sorted(RESUME_MAY_DIFFER)) + "); start a new run with another run_dir= instead")
    if int(requested["train"]["epochs"]) < epochs_done:
        raise RunDirError(f"cannot resume {where}: train.epochs={requested['train']['epochs']} but the run has "
                          f"already trained {epochs_done} epochs")


def _saved_state(run: RunDir, resume: Path) -> tuple[Optional[dict], int]:
    """The config a run was started with and its epochs done (a staged run: the whole command's
    config; an ordinary one: its checkpoint's, else its config.yaml)."""
    if run.stage_names():
        return (config.load_yaml(run.config) if run.config.is_file() else None), 0
    ckpt_path = resume if resume.is_file() else run.checkpoint("last")
    if ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        return ckpt["config"], int(ckpt["epoch"])
    return (config.load_yaml(run.config) if run.config.is_file() else None), 0


def claim_run_dir(cfg: dict[str, Any]) -> Optional[RunLock]:
    """Set ``cfg["run_dir"]`` and, on the main process, lock it. A new run into a directory that
    holds one, a locked directory, and a resume that would continue something else are refused
    before anything is written."""
    lock, error = None, None
    if distributed.is_main_process():
        try:
            lock = _claim(cfg)
        except (RunDirError, config.ConfigError) as e:
            error = e
    # every rank stops together, and continues (or starts) what rank 0 decided
    cfg["run_dir"], cfg["resume"], error = distributed.broadcast_object((cfg["run_dir"], cfg["resume"], error))
    if error is not None:
        raise error
    return lock


def _claim(cfg: dict[str, Any]) -> RunLock:
    if cfg["resume"] == "auto":  # continue run_dir if it holds a run, else start it
        run = RunDir(cfg["run_dir"])
        cfg["resume"] = str(run.path) if run.holds_run() else None
        if cfg["resume"]:
            print(f"tailcon: resume=auto: continuing the run in {run.path}")
    if cfg["resume"]:
        resume = Path(cfg["resume"])
        if not resume.exists():
            raise RunDirError(f"resume={resume}: no such run directory or checkpoint")
        run = RunDir(run_dir_of(resume))
        if not (run.config.is_file() or run.checkpoint("last").is_file() or resume.is_file()):
            raise RunDirError(f"resume={resume}: {run.path} holds no tailcon run (no config.yaml, no last.pt)")
        cfg["run_dir"] = str(run.path)
        saved, done = _saved_state(run, resume)  # checkpoints are written atomically: safe to read unlocked
        if saved is not None:
            check_resumable(saved, cfg, done, run.path)  # a refused resume touches nothing, not even the lock
        lock = run.lock().acquire()
        _clean_stale(run)
        return lock
    run = RunDir(cfg["run_dir"] or unique_run_dir(cfg["name"]))
    cfg["run_dir"] = str(run.path)
    if run.holds_run():  # checked before the lock file is made: a refused run changes nothing
        raise RunDirError(_occupied(run))
    lock = run.lock().acquire()
    if run.holds_run():  # another process got there between the check and the lock
        lock.release()
        raise RunDirError(_occupied(run))
    return lock


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
    """Train from a resolved config; ``cfg['resume']`` continues a run directory or checkpoint."""
    distributed.init_from_env()  # under torchrun: join the process group
    cfg = resolution.validate(cfg)
    elastic_resume(cfg)
    resolve_amp(resolve_device(cfg["device"]), cfg["train"]["amp"])  # before any directory is touched
    lock = claim_run_dir(cfg)
    try:
        with output_copied_to(RunDir(cfg["run_dir"]).log, enabled=distributed.is_main_process()) as log:
            try:
                stages = get_method(cfg["method"]["name"]).stages(cfg)
                if not stages:
                    result = _train_single(cfg)
                    distributed.barrier()
                    return result
                return _train_stages(cfg, stages)
            except Exception as e:
                if log is not None:  # the error the command line prints, in the run's log too
                    log.write(f"tailcon: error: {type(e).__name__}: {e}\n")
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


def _train_stages(cfg: dict[str, Any], stages: list[tuple[str, dict]]) -> dict[str, Any]:
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
        if stage_cfg["resume"]:
            ckpt = load_checkpoint(stage.checkpoint("last"))
            check_resumable(ckpt["config"], resolution.validate(stage_cfg), int(ckpt["epoch"]),
                            stage.path)
        if main:
            print(f"tailcon: stage {name!r} -> {stage.path}")
        result = _train_single(stage_cfg)
        distributed.barrier()  # the stage's checkpoints are written before any rank moves on
    final = root.stage(stages[-1][0])
    if main and final.results.is_file():
        atomic_write_text(root.results, final.results.read_text())
    return result


def _train_single(cfg: dict[str, Any]) -> dict[str, Any]:
    from .trainer import Trainer

    run = RunDir(cfg["run_dir"])
    resume = Path(cfg["resume"]) if cfg["resume"] else None
    ckpt_path = resume if resume is not None and resume.is_file() else run.checkpoint("last")
    ckpt = load_checkpoint(ckpt_path) if resume is not None and ckpt_path.is_file() else None
    return Trainer(cfg, resume_from=ckpt).fit()

