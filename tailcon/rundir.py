"""The run directory: its layout, atomic writes, safe checkpoint loading, the lock.

This module alone knows what a run directory holds (docs/run-directory.md):

    RUN_DIR/config.yaml         the resolved config (for a staged run: the whole command's)
    RUN_DIR/metrics.jsonl       one JSON object per epoch
    RUN_DIR/train.log           what training printed (appended by each session)
    RUN_DIR/tb/                 TensorBoard events
    RUN_DIR/last.pt, best.pt    checkpoints (weights-only loadable)
    RUN_DIR/results.json        written once, by training, at its end
    RUN_DIR/eval-<ckpt>-<split>.json, corruptions-<ckpt>.json   written by ``tailcon eval``
    RUN_DIR/stages.json         a staged run: its stage names in order; each stage is RUN_DIR/<name>/
    RUN_DIR/failed.txt          ``tailcon compare``: why the run has no result
    RUN_DIR/.lock               held (flock) by the process training into the directory

Everything else (trainer, eval, inference, report, compare) asks it. Stages are always resolved
relative to the run directory itself, never to the working directory, so a run directory can be
moved or evaluated from anywhere.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import pickle
import re
import shutil
import socket
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import torch

CONFIG, METRICS, TENSORBOARD, RESULTS = "config.yaml", "metrics.jsonl", "tb", "results.json"
STAGES, FAILED, LOCK, MANIFEST, LOG = "stages.json", "failed.txt", ".lock", "manifest.json", "train.log"
CHECKPOINTS = ("last", "best")


class RunDirError(ValueError):
    """A run directory cannot be used as asked (occupied, locked, missing); the message says what to do."""


# ---- atomic files --------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_replace(path: str | os.PathLike, write_to: Callable[[Path], None]) -> None:
    """Let ``write_to(tmp)`` fill a temporary file in the same folder, fsync it, then rename it
    over ``path`` (rename is atomic on POSIX and Windows): a kill at any moment leaves either the
    old file or the new one. The file gets the mode an ordinary ``open`` would (0666 less the
    umask), not the 0600 of temporary files. For writers that take a file name (safetensors,
    ONNX, TorchScript); :func:`atomic_write_bytes` for a file object."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_to(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, write) -> None:
    """Call ``write(fileobj)`` on a temporary file that then replaces ``path`` atomically
    (:func:`atomic_replace`)."""
    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    atomic_replace(path, fill)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def write_shown_figures(path: str | os.PathLike, figures: Any) -> None:
    """Write, as JSON, figures that were already printed; a failed write (a read-only run
    directory, a full disk) is a clear error saying so, not a traceback."""
    try:
        atomic_write_text(path, json.dumps(figures, indent=1))
    except OSError as e:
        raise RunDirError(f"the figures above were not saved: cannot write {path} ({e.strerror or e})") from None


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a checkpoint atomically. A failed write (full disk, file size limit, read-only
    directory) is a :class:`RunDirError` naming the file; the previous checkpoint is intact."""
    try:
        atomic_write_bytes(path, lambda f: torch.save(state, f))
    except (OSError, RuntimeError) as e:
        why = _write_failure(Path(path), e)
        kept = f"the previous {Path(path).name} is intact" if Path(path).is_file() else "no earlier checkpoint exists"
        raise RunDirError(f"could not write checkpoint {path} ({why}); {kept}. Free space or raise the limit, "
                          f"then resume={Path(path).parent}") from None


def _write_failure(path: Path, e: BaseException) -> str:
    """Why a write failed, in words: torch's writer reports a full disk or a file size limit as
    an ``[enforce fail at inline_container.cc]``, so the likely causes are looked up."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    reasons = []
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            reasons.append(f"a file size limit of {limit} bytes is set (ulimit -f)")
    except (ImportError, OSError, ValueError):
        pass
    try:
        free = shutil.disk_usage(path.parent).free
        if free < 64 * 2**20:
            reasons.append(f"only {free // 2**20} MiB are free on its file system")
    except OSError:
        pass
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return "; ".join(reasons) if reasons else f"the write failed: {first}"


def is_temporary_of(name: str, files: tuple[str, ...]) -> bool:
    """Whether ``name`` is a temporary file :func:`atomic_replace` made for one of ``files``
    (``.last.pt.k3j_9xq2.tmp``), left behind when the writer was killed."""
    return any(re.fullmatch(re.escape(f".{f}.") + r"[A-Za-z0-9_]+\.tmp", name) for f in files)


# what only a run's training process writes: its leftovers are stale once that process holds the lock
TRAINING_FILES = (CONFIG, METRICS, RESULTS, MANIFEST, STAGES, LOG, "last.pt", "best.pt")


def remove_stale_temporaries(run: "RunDir") -> list[Path]:
    """Delete the temporaries that a killed training process left in ``run`` and its stages
    (as large as a checkpoint each). Call with the run's lock held: no live writer then."""
    removed = []
    for folder in [run.path] + [d.path for d in run.stage_dirs() if d.path != run.path]:
        if folder.is_dir():
            for p in folder.iterdir():
                if is_temporary_of(p.name, TRAINING_FILES) and p.is_file():
                    p.unlink(missing_ok=True)
                    removed.append(p)
    return removed


# what only resuming training needs: inference never reads it
TRAINING_ONLY = ("optimizer", "scaler")


def load_checkpoint(path: str | os.PathLike, which: str = "last", for_inference: bool = False) -> dict[str, Any]:
    """Load a checkpoint file, or a run directory's ``last.pt``/``best.pt`` (a staged run: its
    final stage's), with ``weights_only=True``: tensors and plain containers only, so a crafted
    file cannot run code. A file that needs more is refused.

    ``for_inference``: the file is memory-mapped and the optimizer state left out, so it is never
    read from disk (momentum buffers are as large as the model)."""
    path = resolve_checkpoint(path, which)
    if _is_torchscript(path):
        raise RunDirError(f"{path} is a TorchScript export, not a checkpoint; its loading can run code stored in it: "
                          "tailcon.load(PATH, trust=True) (tailcon predict --trust) runs it if you trust its source, "
                          "or use the run directory or its .safetensors export")
    try:
        ckpt = _load_mapped(path) if for_inference else torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = [line.strip().split(" Please use")[0] for line in str(e).splitlines() if "Unsupported global" in line]
        raise RunDirError(f"refusing to load {path}: it holds Python objects other than tensors and plain "
                          f"containers, which could run code when unpickled (every checkpoint tailcon writes "
                          f"loads without them){': ' + why[0] if why else ''}") from None
    except Exception as e:  # a truncated or foreign file
        raise RunDirError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(ckpt, dict) or not {"model", "config"} <= set(ckpt):
        raise RunDirError(f"{path} is not a tailcon checkpoint (no 'model' and 'config' entries: a plain state dict?). "
                          f"To start a run from its weights: model.pretrained={path}")
    return {k: v for k, v in ckpt.items() if k not in TRAINING_ONLY} if for_inference else ckpt


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip holding code/ and constants.pkl (a checkpoint holds data.pkl only)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.split("/", 1)[-1].startswith("code/") for n in names) and \
        any(n.endswith("/constants.pkl") for n in names)


def _load_mapped(path: Path, attempts: int = 10) -> Any:
    """``torch.load(mmap=True)`` of a file that training may be replacing right now. Loading
    reads the archive's index and maps its data in separate opens: should the file be replaced
    in between (an atomic checkpoint write), the halves would come from two files. So the load
    counts only if the file is the same (inode and time) before and after, else it is repeated."""
    for attempt in range(attempts):
        before = os.stat(path)
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            if attempt + 1 < attempts and _replaced(path, before):
                continue
            raise
        if not _replaced(path, before):
            return ckpt
    raise RunDirError(f"cannot read checkpoint {path}: it was replaced {attempts} times while being read")


def _replaced(path: Path, before: os.stat_result) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return True
    return (now.st_ino, now.st_mtime_ns, now.st_size) != (before.st_ino, before.st_mtime_ns, before.st_size)


# ---- paths ---------------------------------------------------------------------------------------
def run_to_resume(resume: str | os.PathLike) -> "RunDir":
    """The run directory that ``resume=PATH`` (a run directory or a checkpoint in one) continues;
    a path that does not exist, or holds no tailcon run, is an error that says so."""
    path = Path(resume)
    if not path.exists():
        raise RunDirError(f"resume={resume}: no such run directory or checkpoint")
    run = RunDir(run_dir_of(path))
    if not (run.config.is_file() or run.checkpoint("last").is_file() or path.is_file()):
        raise RunDirError(f"resume={resume}: {run.path} holds no tailcon run (no config.yaml, no last.pt)")
    return run


def run_dir_of(path: str | os.PathLike) -> Path:
    """The run directory of a run directory or of a checkpoint file inside one."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def resolve_checkpoint(path: str | os.PathLike, which: str = "last") -> Path:
    """A checkpoint file as given, or ``which`` (last | best) of a run directory; a staged run
    resolves to its final stage (relative to the run directory, wherever it now is)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such run directory or checkpoint")
    if which not in CHECKPOINTS:
        raise ValueError(f"checkpoint {which!r}: expected one of {', '.join(CHECKPOINTS)}")
    run = RunDir(p).final_stage()
    if not run.checkpoint(which).is_file():
        raise FileNotFoundError(f"{run.path} holds no {which}.pt")
    return run.checkpoint(which)


def unique_run_dir(name: Optional[str], parent: str = "runs") -> Path:
    """``runs/<date>-<name>``, with ``-2``, ``-3``... where that already exists."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(parent) / f"{stamp}-{name or 'run'}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


class RunDir:
    """One run directory (or one stage of a staged run)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # the layout
    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def log(self) -> Path:
        return self.path / LOG

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def failed(self) -> Path:
        return self.path / FAILED

    def checkpoint(self, which: str = "last") -> Path:
        return self.path / f"{which}.pt"

    def eval_file(self, checkpoint: str | os.PathLike, split: str, variant: str = "") -> Path:
        """Where ``tailcon eval`` writes its figures for a checkpoint of this directory
        (``variant``: e.g. ``taunorm`` for the tau-normalised classifier)."""
        return self.path / f"eval-{Path(checkpoint).stem}-{split}{'-' + variant if variant else ''}.json"

    def corruptions_file(self, checkpoint: str | os.PathLike) -> Path:
        return self.path / f"corruptions-{Path(checkpoint).stem}.json"

    # stages
    def stage_names(self) -> list[str]:
        """The stages of a staged run, in order; [] for an ordinary run."""
        f = self.path / STAGES
        return json.loads(f.read_text()) if f.is_file() else []

    def write_stage_names(self, names: list[str]) -> None:
        atomic_write_text(self.path / STAGES, json.dumps(names))

    def stage(self, name: str) -> "RunDir":
        return RunDir(self.path / name)

    def stage_dirs(self) -> list["RunDir"]:
        """The directories holding the run's epochs, in order (itself for an ordinary run)."""
        return [self.stage(n) for n in self.stage_names()] or [self]

    def final_stage(self) -> "RunDir":
        return self.stage_dirs()[-1]

    # state
    def holds_run(self) -> bool:
        """Anything of a run here (the lock file alone does not count)."""
        return self.path.is_dir() and any(p.name != LOCK for p in self.path.iterdir())

    def read_results(self) -> Optional[dict[str, Any]]:
        """What training wrote at its end; None while the run has not finished."""
        return json.loads(self.results.read_text()) if self.results.is_file() else None

    def write_json(self, path: Path, obj: Any) -> None:
        atomic_write_text(path, json.dumps(obj, indent=1))

    def lock(self) -> "RunLock":
        return RunLock(self.path / LOCK)


class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.lock`` while a process trains into the directory.

    The kernel drops the lock when its process dies (even by SIGKILL), so a killed run never
    blocks its own ``resume=``; the file's text only names the holder for the error message.
    Without ``fcntl`` (Windows) nothing is locked.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd: Optional[int] = None
        self._made_dir = False
        self._made: list[Path] = []

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:
            return self
        folder = self.path.parent
        if folder.exists() and not folder.is_dir():
            raise RunDirError(f"run_dir={folder} is a file, not a directory; give another run_dir=")
        self._made = [p for p in (folder, *folder.parents) if not p.exists()]  # e.g. runs/ and runs/<name>
        self._made_dir = bool(self._made)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # never follow a link: a .lock pointing elsewhere would have its target truncated
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise RunDirError(f"{self.path} is a symbolic link; a run's lock must be a plain file (writing it would "
                                  "overwrite what the link points to): remove the link") from None
            raise RunDirError(f"cannot write the run's lock file {self.path} ({e.strerror or e}); a run needs a "
                              "writable run directory: fix it or give another run_dir=") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RunDirError(f"{self.path} is not a regular file; a run's lock must be one: remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunDirError(f"run directory {self.path.parent} is in use by {holder}; wait for it to end, "
                              "or train into another run_dir=") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {_dt.datetime.now():%Y-%m-%d %H:%M:%S} "
                     f"({' '.join(sys.argv)[:300]})".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Unlock; a directory this lock made and nothing else wrote into (the run failed before
        its first file, e.g. on a missing data root) is removed again."""
        if self._fd is None:
            return
        import fcntl

        if not RunDir(self.path.parent).holds_run():  # no run here (it failed before writing): no lock file either
            self.path.unlink(missing_ok=True)
            # the run directory, then the parents this lock made (runs/), while empty
            for folder in self._made if self._made_dir else []:
                try:
                    folder.rmdir()
                except OSError:
                    break
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
