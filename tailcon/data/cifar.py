"""CIFAR-10 / CIFAR-100 from the official "python version" files, and their long-tailed subsets."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .datasets import DataError


@dataclass(frozen=True)
class CifarSpec:
    folder: str
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    per_class: int


CIFAR10 = CifarSpec(
    folder="cifar-10-batches-py",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key=b"labels",
    names_key=b"label_names",
    num_classes=10,
    per_class=5000,
)
CIFAR100 = CifarSpec(
    folder="cifar-100-python",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key=b"fine_labels",
    names_key=b"fine_label_names",
    num_classes=100,
    per_class=500,
)
SPECS = {"cifar10": CIFAR10, "cifar100": CIFAR100}

urlopen = urllib.request.urlopen  # module attribute so tests can stub the network


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download_cifar(root: str | os.PathLike, spec: CifarSpec, timeout: float = 60.0) -> Path:
    """Download the official archive into ``root``, verify its MD5, extract it, return the folder.

    The archive is written to a ``.part`` file first, so an interrupted download never looks
    complete; a checksum mismatch deletes it and raises.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / os.path.basename(spec.url)
    if not (archive.is_file() and md5sum(archive) == spec.md5):
        part = archive.with_name(archive.name + ".part")
        print(f"downloading {spec.url} -> {archive}")
        try:
            with urlopen(spec.url, timeout=timeout) as resp, open(part, "wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as e:
            part.unlink(missing_ok=True)
            raise DataError(f"could not download {spec.url}: {e}. Download it by hand and put "
                            f"{archive.name} (or the extracted {spec.folder}/) in {root}") from None
        got = md5sum(part)
        if got != spec.md5:
            part.unlink(missing_ok=True)
            raise DataError(f"checksum mismatch for {spec.url}: md5 {got}, expected {spec.md5}")
        os.replace(part, archive)
    extract_archive(archive, root)
    return root / spec.folder


def extract_archive(archive: str | os.PathLike, root: str | os.PathLike) -> None:
    """Extract a tar archive into ``root``, refusing any member that would land outside it
    (``../x``, absolute paths, links, devices). Paths are compared component-wise, so a sibling
    such as ``root-escaped/`` is outside ``root`` too."""
    root = Path(root).resolve()
    with tarfile.open(archive, "r:*") as tf:
        for m in tf.getmembers():
            target = (root / m.name).resolve()
            if os.path.commonpath([root, target]) != str(root) or not (m.isfile() or m.isdir()):
                raise DataError(f"{archive}: unsafe member {m.name!r} (outside {root}, or not a plain file)")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.12 (and 3.8.17+ backports): the library's own check too
            tf.extractall(root, filter="data")
        else:
            tf.extractall(root)


def find_cifar_folder(root: str | os.PathLike, spec: CifarSpec, download: bool = False) -> Path:
    """``root`` may be the extracted folder itself or its parent."""
    if root is None:
        raise DataError(f"data.root is not set: point it at the directory holding {spec.folder}/ "
                        f"(or set data.download=true to fetch {spec.url})")
    root = Path(root).expanduser()
    for cand in (root / spec.folder, root):
        if (cand / spec.meta_file).is_file() and all((cand / f).is_file() for f in spec.train_files):
            return cand
    if download:
        return download_cifar(root, spec)
    raise DataError(f"CIFAR files not found under data.root={root}: expected {spec.folder}/"
                    f"{{{','.join(spec.train_files + spec.test_files)},{spec.meta_file}}}. "
                    f"Set data.download=true to fetch them from {spec.url}")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, OSError) as e:
        raise DataError(f"corrupt CIFAR file {path}: {e}") from None


def load_cifar_split(folder: Path, spec: CifarSpec, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 [N, 32, 32, 3] (RGB, HWC) and labels as int64 [N], in file order."""
    xs, ys = [], []
    for name in spec.train_files if train else spec.test_files:
        d = _unpickle(folder / name)
        if b"data" not in d or spec.label_key not in d:
            raise DataError(f"{folder / name}: missing 'data' or '{spec.label_key.decode()}' entry")
        xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[spec.label_key], dtype=np.int64))
    x = np.concatenate(xs).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), np.concatenate(ys)


def load_cifar_classes(folder: Path, spec: CifarSpec) -> list[str]:
    meta = _unpickle(folder / spec.meta_file)
    names = meta.get(spec.names_key)
    if names is None:
        return [str(i) for i in range(spec.num_classes)]
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
