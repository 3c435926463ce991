"""``train(cfg)``: claim the run directory, check what a resume continues, run the stages.

A new run never writes into a directory that already holds one; a resumed run continues only
what it is: same method, hyperparameters, model and data (keys that cannot change the result so
far, :data:`RESUME_MAY_DIFFER`, excepted). A method with several stages (``Method.stages``)
runs them one after the other in ``RUN_DIR/<stage>``; a finished stage is skipped on resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from .. import config as C
from .. import distributed as D
from ..methods import get_method
from .device import resolve_amp, resolve_device
from .rundir import RunDir, RunDirError, RunLock, atomic_write_text, load_checkpoint, run_dir_of, unique_run_dir

# Keys a resumed run may change: none of them can change what was computed so far.
RESUME_MAY_DIFFER = frozenset({
    "name", "run_dir", "resume", "device", "data.root", "data.download", "data.num_workers",
    "model.pretrained",  # read by fresh runs only: a resumed run has the weights in its checkpoint
    "train.wandb.project", "train.wandb.mode", "train.wandb.entity",  # where the logs also go
    "data.eval_batch_size", "data.max_image_pixels", "train.progress", "train.log_every", "train.eval_every",
    "train.epochs",  # extending; fewer than the epochs already trained is refused
    "method.init_from",  # a stage that has started holds those weights in its own checkpoint
})


def config_differences(saved: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """``key: saved -> requested`` for every key that differs and may not."""
    a, b = C.flatten(C.plain(C.complete(saved))), C.flatten(C.plain(C.complete(requested)))
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
        return (C.load_yaml(run.config) if run.config.is_file() else None), 0
    ckpt_path = resume if resume.is_file() else run.checkpoint("last")
    if ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        return ckpt["config"], int(ckpt["epoch"])
    return (C.load_yaml(run.config) if run.config.is_file() else None), 0


def claim_run_dir(cfg: dict[str, Any]) -> Optional[RunLock]:
    """Set ``cfg["run_dir"]`` and, on the main process, lock it. A new run into a directory that
    holds one, a locked directory, and a resume that would continue something else are refused
    before anything is written."""
    lock, error = None, None
    if D.is_main_process():
        try:
            lock = _claim(cfg)
        except (RunDirError, C.ConfigError) as e:
            error = e
    cfg["run_dir"], error = D.broadcast_object((cfg["run_dir"], error))  # every rank stops together
    if error is not None:
        raise error
    return lock


def _claim(cfg: dict[str, Any]) -> RunLock:
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
        return run.lock().acquire()
    run = RunDir(cfg["run_dir"] or unique_run_dir(cfg["name"]))
    cfg["run_dir"] = str(run.path)
    if run.holds_run():  # checked before the lock file is made: a refused run changes nothing
        raise RunDirError(_occupied(run))
    lock = run.lock().acquire()
    if run.holds_run():  # another process got there between the check and the lock
        lock.release()
        raise RunDirError(_occupied(run))
    return lock


def _occupied(run: RunDir) -> str:
    held = sorted(p.name for p in run.path.iterdir() if p.name != ".lock")
    shown = ", ".join(held[:6]) + (", ..." if len(held) > 6 else "")
    return (f"run directory {run.path} already holds a run ({shown}); nothing was changed. To continue it: "
            f"resume={run.path}; to start a new run: give a fresh run_dir= (or leave run_dir unset for "
            f"runs/<date>-<name>)")


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    """Train from a resolved config; ``cfg['resume']`` continues a run directory or checkpoint."""
    D.init_from_env()  # under torchrun: join the process group
    cfg = C.validate(cfg)
    resolve_amp(resolve_device(cfg["device"]), cfg["train"]["amp"])  # before any directory is touched
    lock = claim_run_dir(cfg)
    try:
        stages = get_method(cfg["method"]["name"]).stages(cfg)
        if not stages:
            result = _train_single(cfg)
            D.barrier()
            return result
        return _train_stages(cfg, stages)
    finally:
        if lock is not None:
            lock.release()


def _train_stages(cfg: dict[str, Any], stages: list[tuple[str, dict]]) -> dict[str, Any]:
    root = RunDir(cfg["run_dir"])
    main = D.is_main_process()
    if main:
        root.path.mkdir(parents=True, exist_ok=True)
        root.write_stage_names([name for name, _ in stages])
        atomic_write_text(root.config, C.dump({**cfg, "resume": None}))
    result: dict[str, Any] = {}
    for name, overrides in stages:
        stage = root.stage(name)
        stage_cfg = C.merge(cfg, overrides)
        stage_cfg["run_dir"] = str(stage.path)
        stage_cfg["resume"] = str(stage.path) if stage.checkpoint("last").is_file() else None
        if stage_cfg["resume"]:
            ckpt = load_checkpoint(stage.checkpoint("last"))
            check_resumable(ckpt["config"], C.validate(stage_cfg), int(ckpt["epoch"]),
                            stage.path)
        if main:
            print(f"tailcon: stage {name!r} -> {stage.path}")
        result = _train_single(stage_cfg)
        D.barrier()  # the stage's checkpoints are written before any rank moves on
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

