"""``tailcon eval RUN --corruptions``: error under common corruptions and mCE against a baseline.

CIFAR-scale test sets are corrupted on the fly (:mod:`tailcon.data.corruptions`, seeded, the
same images for the model and its baseline); file datasets (ImageNet-LT) read the ImageNet-C
folder layout. Reported as in ResCom's ImageNet-C table: error per corruption and family, and
CE_c = sum_s E(model, c, s) / sum_s E(baseline, c, s), mCE = mean_c CE_c (in %).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..data.corruptions import (CORRUPTIONS, FAMILIES, FAMILY_OF, RELEASED, SEVERITIES, cifar_c_arrays,
                                corrupt_array, imagenet_c_images)

APPROXIMATION = ("on-the-fly approximation of CIFAR-C (tailcon.data.corruptions: 14 corruptions, no frost), not the "
                 "released arrays that papers report; give --cifar-c ROOT for those")
from ..config import ConfigError
from ..data import DataError
from ..defaults import CORRUPTION_MAX_IMAGES, CORRUPTION_SEVERITIES
from ..rundir import RunDir, write_shown_figures


@torch.no_grad()
def _array_error(predictor, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
    mean = torch.tensor(predictor.info.mean).view(1, 3, 1, 1)
    std = torch.tensor(predictor.info.std).view(1, 3, 1, 1)
    correct = 0
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start:start + batch_size]).permute(0, 3, 1, 2).float().div_(255)
        x = ((x - mean) / std).to(predictor.device)
        pred = predictor.model(x).argmax(1).cpu().numpy()
        correct += int((pred == labels[start:start + batch_size]).sum())
    return 100.0 * (1 - correct / len(images))


@torch.no_grad()
def _files_error(predictor, paths: Sequence[str], labels: Sequence[int], batch_size: int = 128) -> float:
    from torch.utils.data import DataLoader
    from torchvision import transforms as T

    from ..data import FileListDataset

    tf = T.Compose([T.CenterCrop(predictor.info.size), T.ToTensor(), T.Normalize(predictor.info.mean, predictor.info.std)])
    ds = FileListDataset(list(paths), list(labels), len(predictor.classes), transform=tf, name="imagenet-c")
    correct = total = 0
    for x, y in DataLoader(ds, batch_size=batch_size, num_workers=2):
        correct += int((predictor.model(x.to(predictor.device)).argmax(1).cpu() == y).sum())
        total += len(y)
    return 100.0 * (1 - correct / total)


def corruption_errors(predictors: dict[str, Any], names: Sequence[str], severities: Sequence[int],
                      max_images: Optional[int], seed: int = 0, imagenet_c: Optional[str] = None,
                      cifar_c: Optional[str] = None) -> dict[str, dict]:
    """Top-1 error (%) of each predictor: {"clean": e, "errors": {corruption: {severity: e}}}.
    ``cifar_c``: read the released CIFAR-C arrays instead of corrupting on the fly."""
    from ..data import ArrayDataset, build_eval_data

    first = next(iter(predictors.values()))
    data = build_eval_data(first.config, first.classes)
    out = {k: {"clean": None, "errors": {n: {} for n in names}} for k in predictors}
    test = data.test
    if isinstance(test, ArrayDataset):
        idx = np.arange(len(test))
        if max_images and max_images < len(idx):
            idx = np.sort(np.random.default_rng(seed).permutation(len(idx))[:max_images])
        images, labels = test.images[idx], test.targets[idx]
        for k, p in predictors.items():
            out[k]["clean"] = _array_error(p, images, labels)
        for name in names:
            released = cifar_c_arrays(cifar_c, name, len(test)) if cifar_c else None
            for s in severities:
                if released is not None:  # block s of the released array, the same test images
                    rows = (s - 1) * len(test) + idx
                    corrupted = np.ascontiguousarray(released[0][rows])
                    if not np.array_equal(released[1][rows], labels):
                        raise DataError(f"{cifar_c}/labels.npy does not match the test labels of {data.name!r}: "
                                         "are these the arrays of another dataset (CIFAR-10-C vs CIFAR-100-C)?")
                else:
                    corrupted = corrupt_array(images, name, s, seed)  # once, shared by model and baseline
                for k, p in predictors.items():
                    out[k]["errors"][name][s] = _array_error(p, corrupted, labels)
                print(f"  {name} severity {s}: " + ", ".join(f"{k} {out[k]['errors'][name][s]:.2f}%" for k in out),
                      flush=True)
        return out
    if not imagenet_c:
        raise ConfigError(f"dataset {data.name!r} is read from files: give --imagenet-c ROOT (the ImageNet-C folder "
                         "layout ROOT/<corruption>/<severity>/<wnid>/)")
    wnid_to_label = {Path(path).parent.name: int(y) for path, y in zip(test.paths, test.targets)}
    for name in names:
        for s in severities:
            paths, labels = imagenet_c_images(imagenet_c, name, s, wnid_to_label)
            for k, p in predictors.items():
                out[k]["errors"][name][s] = _files_error(p, paths, labels)
    return out


def summarise(errors: dict[str, Any], baseline: Optional[dict[str, Any]]) -> dict[str, Any]:
    per = {n: float(np.mean(list(sev.values()))) for n, sev in errors["errors"].items()}
    fam = {}
    for family, names in FAMILIES.items():
        vals = [per[n] for n in names if n in per]
        if vals:
            fam[family] = float(np.mean(vals))
    result = {**errors, "corruption_error": per, "family_error": fam, "mean_error": float(np.mean(list(per.values())))}
    if baseline is not None:
        ce = {}
        for n, sev in errors["errors"].items():
            b = sum(baseline["errors"][n].values())
            ce[n] = 100.0 * sum(sev.values()) / b if b > 0 else float("nan")
        result["ce"] = ce
        result["mCE"] = float(np.mean(list(ce.values())))
        result["family_ce"] = {f: float(np.mean([ce[n] for n in names if n in ce]))
                               for f, names in FAMILIES.items() if any(n in ce for n in names)}
    return result


def format_table(summary: dict[str, Any], title: str) -> str:
    lines = [title, f"clean error {summary['clean']:.2f}%" if summary.get("clean") is not None else ""]
    head = f"{'corruption':<20s} {'family':<8s} " + " ".join(f"s{s:<5d}" for s in SEVERITIES) + "   mean" + \
           ("     CE" if "ce" in summary else "")
    lines.append(head)
    for name, sev in summary["errors"].items():
        cells = " ".join(f"{sev[s]:6.2f}" if s in sev else "     -" for s in SEVERITIES)
        line = f"{name:<20s} {FAMILY_OF[name]:<8s} {cells} {summary['corruption_error'][name]:6.2f}"
        if "ce" in summary:
            line += f" {summary['ce'][name]:6.1f}"
        lines.append(line)
    lines.append("family mean error: " + ", ".join(f"{f} {v:.2f}%" for f, v in summary["family_error"].items()))
    lines.append(f"mean corruption error {summary['mean_error']:.2f}%" +
                 (f"; mCE {summary['mCE']:.1f}% relative to the baseline" if "mCE" in summary else ""))
    return "\n".join(line for line in lines if line)


def evaluate_corruptions(run: str, baseline: Optional[str] = None, names: Optional[Sequence[str]] = None,
                         severities: Sequence[int] = CORRUPTION_SEVERITIES,
                         max_images: Optional[int] = CORRUPTION_MAX_IMAGES, seed: int = 0,
                         imagenet_c: Optional[str] = None, device: Optional[str] = None,
                         cifar_c: Optional[str] = None) -> dict[str, Any]:
    from ..inference import load

    known = RELEASED if (cifar_c or imagenet_c) else tuple(CORRUPTIONS)
    names = list(names or known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown corruption(s) {unknown}; known: {', '.join(known)}")
    predictors = {"model": load(run, device=device)}
    if baseline:
        predictors["baseline"] = load(baseline, device=device)
    errors = corruption_errors(predictors, names, severities, max_images, seed, imagenet_c, cifar_c)
    base = summarise(errors["baseline"], None) if baseline else None
    result = summarise(errors["model"], base)
    source = (f"released CIFAR-C arrays ({cifar_c})" if cifar_c else f"ImageNet-C folder ({imagenet_c})"
              if imagenet_c else APPROXIMATION)
    result.update(run=str(run), baseline=str(baseline) if baseline else None, severities=list(severities),
                  images=max_images, seed=seed, source=source, approximation=not (cifar_c or imagenet_c))
    if base is not None:
        result["baseline_errors"] = base  # kept here: nothing is written into the baseline's run directory
        print(format_table(base, f"baseline {baseline}"))
    print(format_table(result, f"{run}" + (f" (CE relative to {baseline})" if baseline else "")))
    print(f"corruptions: {source}")
    ckpt = predictors["model"].checkpoint
    out = RunDir(ckpt.parent).corruptions_file(ckpt)
    write_shown_figures(out, result)
    print(f"tailcon eval: wrote {out}")
    return result
