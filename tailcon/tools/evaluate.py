"""``tailcon eval``: a checkpoint's figures on a split, printed first, then written to their own
file beside the checkpoint (``eval-<checkpoint>-<split>.json``); the run's ``results.json`` is
never touched."""

from __future__ import annotations

import os
from typing import Any

from .. import config, resolution
from ..data import build_eval_data, build_eval_transform
from ..engine.device import resolve_device
from ..engine.evaluation import predict_dataset
from ..engine.metrics import evaluation_metrics, format_report
from ..methods import build_method
from ..rundir import RunDir, load_checkpoint, resolve_checkpoint, write_shown_figures
from .tau_norm import tau_norm_metrics

def evaluate_checkpoint(path: str | os.PathLike, split: str = "test", overrides: tuple[str, ...] = (),
                        which: str = "last", tau_norm: str | float | None = None) -> dict[str, Any]:
    """Evaluate a run directory (its ``last.pt`` or ``best.pt``; a staged run: its final stage)
    or a checkpoint file: print the report, then write ``eval-<checkpoint>-<split>.json`` beside
    the checkpoint. The run's ``results.json`` is never touched.

    ``tau_norm``: also evaluate the classifier tau-normalised (a number, or ``"auto"``: the tau of
    :data:`tailcon.tools.tau_norm.TAU_GRID` with the best top-1 on the validation split, or on the test split, labelled
    so, when there is none); written to ``eval-<checkpoint>-<split>-taunorm.json``."""
    ckpt_path = resolve_checkpoint(path, which)
    ckpt = load_checkpoint(ckpt_path, for_inference=True)
    over = config.parse_overrides(overrides)
    config.check_keys(over, config.DEFAULTS)
    cfg = resolution.validate(config.merge(config.complete(ckpt["config"]), over))
    device = resolve_device(cfg["device"])
    classes = [str(c) for c in (ckpt.get("classes") or range(int(ckpt["num_classes"])))]
    data = build_eval_data(cfg, classes)  # classes mapped to the model's ids by name
    if split == "val" and data.val is None:
        raise config.ConfigError(f"dataset {data.name!r} has no validation split")
    counts = ckpt["cls_num_list"]
    method = build_method(cfg, ckpt["num_classes"], counts)
    method.load_state_dict(ckpt["model"])
    method.to(device)
    dataset = data.val if split == "val" else data.test
    dataset.transform = build_eval_transform(data.info)
    print(f"tailcon eval: classifying the {len(dataset)} images of the {split} split with {ckpt_path} on {device}",
          flush=True)
    m = evaluation_metrics(predict_dataset(method, dataset, cfg, device, desc=split, info=data.info), counts)
    rows = [(f"{ckpt_path.name} epoch {ckpt['epoch']} ({split})", m)]
    if tau_norm is not None:
        tm, chosen = tau_norm_metrics(method, data, cfg, device, split, tau_norm, counts)
        rows.append((f"tau-normalised, tau={chosen['tau']:g}", tm))
    print(format_report(rows, title=f"{ckpt_path}: {split} split, {m['num_images']} images"))
    missing = [c for c, acc in zip(classes, m["per_class"]) if acc is None]
    if missing:
        print(f"note: {len(missing)} of the model's {len(classes)} classes have no image in this split: "
              f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}; their accuracy is empty and the "
              "group figures are means over the classes present")
    if tau_norm is not None:
        if chosen["selected_on"] == "test":
            print("note: tau was picked on the TEST split (the dataset has no validation split): the tau-normalised "
                  "row is optimistic")
        elif chosen["selected_on"] == "val":
            print(f"tau={chosen['tau']:g} picked on the validation split (top-1 {chosen['grid_top1'][str(chosen['tau'])]:.2f})")
    best = ckpt.get("best")
    if best and best.get("selected_on") == "test":
        print("note: best.pt of this run was selected on the test split (the dataset has no validation split)")
    results = {**m, "split": split, "checkpoint": ckpt_path.name, "epoch": ckpt["epoch"], "best": best,
               "missing_classes": missing}
    out = RunDir(ckpt_path.parent).eval_file(ckpt_path, split)
    write_shown_figures(out, results)
    print(f"tailcon eval: wrote {out}")
    if tau_norm is not None:
        tau_out = RunDir(ckpt_path.parent).eval_file(ckpt_path, split, variant="taunorm")
        write_shown_figures(tau_out, {**tm, "split": split, "checkpoint": ckpt_path.name, "epoch": ckpt["epoch"],
                                      "tau_norm": chosen})
        print(f"tailcon eval: wrote {tau_out}")
    return results
