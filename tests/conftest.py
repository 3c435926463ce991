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
        return [pytest.param(None, marks=pytest.mark.skip(
            reason=f"golden vectors from the authors' code are not part of the repository (set TAILCON_GOLDEN=DIR to "
                   f"a folder holding them): no {prefix}*.npz in {GOLDEN}"))]
    return [pytest.param(f, id=f.stem) for f in files]


def tiny_cfg(tmp_path, *overrides: str, epochs: int = 2) -> dict:
    """The embedded digits config, shrunk for tests."""
    from tailcon import config, resolution
    from tailcon.cli import embedded_config_path

    base = [f"run_dir={tmp_path / 'run'}", f"train.epochs={epochs}", "train.progress=false",
            "train.eval_every=1", "optim.warmup_epochs=0"]
    return resolution.resolve(embedded_config_path(), base + list(overrides))


def write_image_folder(root, splits=None):
    """``root/<split>/<class>/<i>.png``: ``splits`` maps split -> {class: number of images}
    (default: train a:3 b:2, test a:1 b:1). Each image is 8x8, coloured by class and index."""
    from PIL import Image

    splits = splits or {"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1}}
    for split, classes in splits.items():
        for c, n in classes.items():
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (40 * i, 50 * (len(c) + ord(c[0]) % 5), 0)).save(root / split / c / f"{i}.png")
    return root
