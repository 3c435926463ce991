"""Images that stand in a training split and in an evaluation split at once (a copy, a re-split gone
wrong): every figure on such a split is inflated. Found by content, not by name: the bytes of each
file (what the check of unreadable images reads anyway), or of each in-memory image."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .datasets import ArrayDataset, FileListDataset, image_digest


def content_digests(dataset, file_digests: Optional[Sequence[bytes]] = None) -> Optional[list[bytes]]:
    """One digest per sample: of the image bytes of an in-memory dataset, of the file bytes of a
    file dataset (``file_digests`` when a pass over the files made them already); None for other
    datasets."""
    if isinstance(dataset, ArrayDataset):
        images = np.ascontiguousarray(dataset.images)
        return [image_digest(images[i].tobytes()) for i in range(len(images))]
    if isinstance(dataset, FileListDataset):
        if file_digests is not None:
            return list(file_digests)
        out = []
        for path in dataset.paths:
            with open(path, "rb") as f:
                out.append(image_digest(f.read()))
        return out
    return None


def overlapping(train: Sequence[bytes], other: Sequence[bytes]) -> list[int]:
    """Indices of ``other`` whose content is also in ``train``."""
    seen = set(train)
    return [i for i, d in enumerate(other) if d in seen]


def sample_name(dataset, index: int) -> str:
    return str(dataset.paths[index]) if isinstance(dataset, FileListDataset) else f"{dataset.name}[{index}]"


def find_overlap(train, evaluation: dict, file_digests: Optional[dict] = None, examples: int = 3) -> dict:
    """{split: {"count": images of the split whose content is in ``train``, "examples": a few of
    their names}} for each evaluation split (``evaluation``: {split: dataset or None});
    ``file_digests``: {split: digests} that a pass over the files made already. Splits whose
    content cannot be read (neither files nor arrays) are left out."""
    file_digests = file_digests or {}
    train_digests = content_digests(train, file_digests.get("train"))
    if train_digests is None:
        return {}
    out = {}
    for split, dataset in evaluation.items():
        if dataset is None:
            continue
        digests = content_digests(dataset, file_digests.get(split))
        if digests is None:
            continue
        hits = overlapping(train_digests, digests)
        out[split] = {"count": len(hits), "examples": [sample_name(dataset, i) for i in hits[:examples]]}
    return out
