import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = Path(os.environ.get("TAILCON_GOLDEN", SHARED / "golden"))
DATA = Path(os.environ.get("TAILCON_SHARED_DATA", SHARED / "data"))


def golden_files(prefix: str) -> list[Path]:
    return sorted(GOLDEN.glob(f"{prefix}*.npz")) if GOLDEN.is_dir() else []


def golden_params(prefix: str):
    files = golden_files(prefix)
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no {prefix}*.npz in {GOLDEN}"))]
    return [pytest.param(f, id=f.stem) for f in files]


def tiny_cfg(tmp_path, *overrides: str, epochs: int = 2) -> dict:
    """The embedded digits config, shrunk for tests."""
    from tailcon import config as C
    from tailcon.cli import embedded_config_path

    base = [f"run_dir={tmp_path / 'run'}", f"train.epochs={epochs}", "train.progress=false",
            "train.eval_every=1", "optim.warmup_epochs=0"]
    return C.resolve(embedded_config_path(), base + list(overrides))
