"""``manifest.json``: what produced a run, so two runs can be told apart and compared honestly.

Written by rank 0 when a run (or a stage) starts and again when it ends: tailcon's version, the
git commit and whether the tree was dirty (when tailcon runs from a checkout), Python, torch,
torchvision, CUDA and cuDNN versions, the device names, world size, command line, host, start and
end time, and a fingerprint of the training split (class counts and a SHA-256 of the sample
list). A resumed run appends a session (its own start, end, command, host, versions); the
top-level keys stay those of the first start.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..rundir import RunDir


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def git_state(where: Path | None = None) -> Optional[dict[str, Any]]:
    """{commit, dirty} of the checkout tailcon is imported from; None outside one (a wheel install)."""
    where = where or Path(__file__).resolve().parent.parent.parent
    if not (where / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def data_fingerprint(train, cls_num_list) -> dict[str, Any]:
    """Class counts and a hash of the training samples in order: the image bytes of an in-memory
    dataset, the file paths (relative to their common folder, so moving the data root keeps the
    fingerprint) of a file dataset, and the labels."""
    h = hashlib.sha256()
    if hasattr(train, "images"):
        images = train.images
        h.update(np.ascontiguousarray(images.numpy() if isinstance(images, torch.Tensor) else images).tobytes())
        kind = "image bytes"
    elif hasattr(train, "paths"):
        paths = [Path(p) for p in train.paths]
        common = Path(*_common_parts(paths)) if paths else Path()
        for p in paths:
            h.update(os.fsencode(p.relative_to(common) if common.parts else p) + b"\n")  # names need not be UTF-8
        kind = "file paths"
    else:
        kind = "labels only"
    h.update(np.asarray(train.targets, dtype=np.int64).tobytes())
    return {"num_samples": len(train.targets), "class_counts": [int(c) for c in cls_num_list],
            "samples_sha256": h.hexdigest(), "hashed": kind}


def _common_parts(paths: list[Path]) -> tuple[str, ...]:
    parts = paths[0].parent.parts
    for p in paths[1:]:
        q = p.parent.parts
        n = 0
        while n < min(len(parts), len(q)) and parts[n] == q[n]:
            n += 1
        parts = parts[:n]
    return parts


def environment(device: torch.device, world_size: int) -> dict[str, Any]:
    import torchvision

    from .. import __version__

    devices = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
               if device.type == "cuda" else [platform.processor() or platform.machine()])
    return {
        "tailcon": __version__,
        "git": git_state(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "device_names": devices,
        "world_size": int(world_size),
        "command": " ".join(sys.argv),
        "host": socket.gethostname(),
    }


def start_manifest(run: RunDir, *, device: torch.device, world_size: int, train, cls_num_list,
                   overlap: Optional[dict[str, Any]] = None) -> None:
    """Record this session's start (a new manifest, or a session appended on resume) and
    ``overlap``: {split: {count, examples}} of evaluation images also in the training split."""
    session = {**environment(device, world_size), "start_time": _now(), "end_time": None}
    fingerprint = data_fingerprint(train, cls_num_list)
    old = read_manifest(run)
    if old is None:
        manifest = {**session, "data_fingerprint": fingerprint, "sessions": [session]}
    else:
        manifest = {**old, "sessions": [*old.get("sessions", []), session]}
        if old.get("data_fingerprint") != fingerprint:  # resume checks counts; the samples may still differ
            manifest["data_fingerprint_on_resume"] = fingerprint
    if overlap is not None:
        manifest["train_overlap"] = overlap
    run.write_json(run.manifest, manifest)


def finish_manifest(run: RunDir) -> None:
    manifest = read_manifest(run)
    if manifest is None:
        return
    end = _now()
    if manifest.get("sessions"):
        manifest["sessions"][-1]["end_time"] = end
    manifest["end_time"] = end
    run.write_json(run.manifest, manifest)


def read_manifest(run: RunDir) -> Optional[dict[str, Any]]:
    try:
        return json.loads(run.manifest.read_text())
    except (OSError, ValueError):
        return None
