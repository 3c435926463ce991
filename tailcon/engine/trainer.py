"""The one training / evaluation loop every method plugs into.

A method (tailcon.methods) supplies its model parts, the augmentation recipe of each view and a
``training_step`` that returns its losses; this loop owns everything else: data loading,
optimisation, mixed precision, schedules, evaluation, checkpoints, logs and resumption.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import os
import random
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import config as C
from .. import distributed as D
from ..data import ArrayDataset, EpochSampler, FileListDataset, build_data, build_eval_transform, build_train_transform
from ..data.batched_augment import BatchedView, supports as batched_supports
from ..data.build import DataBundle
from ..data.loaders import DecodedDeviceBatches, DeviceBatches, GlobalBatches, reference_loader
from ..methods import Method, get_method
from ..models.sync_batchnorm import convert_sync_batchnorm
from .checkpoint import atomic_write_text, load_checkpoint, run_dir_of, save_checkpoint
from .host import tune_host_allocator
from .logging import RunLogger
from .metrics import format_report, shot_accuracy
from .schedule import lr_at_epoch


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message says where and what to try."""


def resolve_device(name: str) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise C.ConfigError(f"device={name!r} but CUDA is not available on this machine; use device=cpu or auto")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_amp(device: torch.device, amp: str) -> str:
    """``auto``: bf16 on a CUDA GPU that supports it, otherwise none (CPUs without bf16 units
    run it slower than fp32)."""
    if amp == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "none"
    return amp


def autocast_context(device: torch.device, amp: str):
    amp = resolve_amp(device, amp)
    if amp in (None, "none"):
        return nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None:
        raise C.ConfigError(f"train.amp={amp!r}; expected auto, none, bf16 or fp16")
    if amp == "fp16" and device.type != "cuda":
        raise C.ConfigError("train.amp=fp16 needs a CUDA device; use train.amp=bf16 or none")
    return torch.autocast(device_type=device.type, dtype=dtype)


def build_method(cfg: Mapping[str, Any], data: DataBundle) -> Method:
    return get_method(cfg["method"]["name"])(cfg, data)


def _show_progress(cfg: Mapping[str, Any]) -> bool:
    return bool(cfg["train"].get("progress", True)) and sys.stderr.isatty()


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@torch.no_grad()
def predict(method: Method, dataset, cfg: Mapping[str, Any], device: torch.device,
            desc: str = "eval") -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax predictions and labels over a dataset (CPU tensors). Under torchrun each rank
    predicts every world_size-th image and the results are gathered on every rank."""
    from tqdm.auto import tqdm

    if D.is_distributed():
        dataset = torch.utils.data.Subset(dataset, range(D.rank(), len(dataset), D.world_size()))

    # evaluation only decodes and normalises: more workers than cores only adds contention (and torch's warning)
    workers = min(int(cfg["data"]["num_workers"]), _usable_cpus())
    loader = DataLoader(dataset, batch_size=int(cfg["data"]["eval_batch_size"]), shuffle=False,
                        num_workers=workers, pin_memory=device.type == "cuda")
    was_training = method.training
    method.eval()
    preds, labels = [], []
    fmt = torch.channels_last if cfg["train"].get("channels_last") else torch.contiguous_format
    for images, y in tqdm(loader, desc=desc, leave=False, disable=not _show_progress(cfg)):
        with autocast_context(device, cfg["train"].get("amp", "none")):
            logits = method(images.to(device, non_blocking=True, memory_format=fmt))
        preds.append(logits.argmax(dim=1))
        labels.append(y)
    method.train(was_training)
    preds, labels = torch.cat(preds).cpu(), torch.cat(labels)
    if D.is_distributed():
        parts = D.all_gather_objects((preds, labels))
        preds, labels = torch.cat([p for p, _ in parts]), torch.cat([y for _, y in parts])
    return preds, labels


class _TrainingStep(torch.nn.Module):
    """What DDP wraps: its forward is the method's training step, so DDP's gradient hooks see it."""

    def __init__(self, method: Method):
        super().__init__()
        self.method = method

    def forward(self, views, labels, extra):
        return self.method.training_step(views, labels, **extra)


class Trainer:
    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg
        self.device = D.local_device(cfg.get("device")) or resolve_device(cfg.get("device", "auto"))
        self.rank, self.world_size = D.rank(), D.world_size()
        self.is_main = self.rank == 0
        if self.device.type == "cpu":
            tune_host_allocator()
        self.seed = int(cfg["seed"])
        seed_everything(self.seed)
        if cfg["train"].get("deterministic"):
            torch.use_deterministic_algorithms(True, warn_only=True)
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.data = build_data(cfg)
        self.method = build_method(cfg, self.data)
        cfg["method"] = {"name": self.method.name, **self.method.hparams}  # resolved, for config.yaml
        info = self.data.info
        eval_tf = build_eval_transform(info)
        self.data.test.transform = eval_tf
        if self.data.val is not None:
            self.data.val.transform = eval_tf
        if cfg["model"].get("sync_bn") and self.world_size > 1:
            convert_sync_batchnorm(self.method, self.device, skip=self.method.replicated_modules)
        self.memory_format = torch.channels_last if cfg["train"].get("channels_last") else torch.contiguous_format
        self.method.to(self.device, memory_format=self.memory_format)
        if cfg["train"].get("compile"):
            self.method.backbone.compile()  # in place: checkpoint keys stay those of the plain module
        self.step_fn = self.method.training_step
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # buffers (queues, BN statistics) are not broadcast: queues are updated identically on
            # every rank from gathered keys; use model.sync_bn for identical BN statistics
            with warnings.catch_warnings():  # newer torch renames broadcast_buffers; >= 2.4 needs this name
                warnings.simplefilter("ignore", FutureWarning)
                ddp = DDP(_TrainingStep(self.method),
                          device_ids=[self.device.index] if self.device.type == "cuda" else None,
                          broadcast_buffers=False, find_unused_parameters=self.method.has_unused_parameters)
            self.step_fn = lambda views, labels, **extra: ddp(views, labels, extra)
        o = cfg["optim"]
        if o["name"] != "sgd":
            raise C.ConfigError(f"optim.name={o['name']!r}: only 'sgd' is implemented")
        self.optimizer = torch.optim.SGD(self.method.parameters(), lr=float(o["lr"]), momentum=float(o["momentum"]),
                                         nesterov=bool(o["nesterov"]), weight_decay=float(o["weight_decay"]))
        amp = resolve_amp(self.device, cfg["train"].get("amp", "none"))
        autocast_context(self.device, amp)  # validates the value now, not at the first step
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=(amp == "fp16"))
        self.run_dir = Path(cfg["run_dir"] or C.default_run_dir(cfg.get("name")))
        cfg["run_dir"] = str(self.run_dir)
        paired = self.method.paired_batch()  # e.g. Hybrid's class-balanced CE batch, drawn alongside
        self.pipeline = self._choose_pipeline(paired)
        self.sampler = EpochSampler(self.data.train.targets, cfg["data"]["sampler"], seed=self.seed)
        self.loader = self._train_loader(self.data.train, self.sampler, self.seed, self.method.view_recipes(),
                                         self.method.train_transform(info))
        self.paired_loader = None
        if paired is not None:
            sampler_mode, recipes = paired
            self.paired_sampler = EpochSampler(self.data.train.targets, sampler_mode, seed=self.seed + 1)
            self.paired_loader = self._train_loader(copy.copy(self.data.train), self.paired_sampler, self.seed + 1,
                                                    recipes, build_train_transform(recipes, info))
        self.start_epoch = 0
        self.best: Optional[dict[str, Any]] = None

    def _choose_pipeline(self, paired) -> str:
        want = self.cfg["data"].get("pipeline", "auto")
        if want not in ("auto", "device", "reference"):
            raise C.ConfigError(f"data.pipeline={want!r}; expected auto, device or reference")
        recipes = list(self.method.view_recipes()) + (list(paired[1]) if paired else [])
        reasons = []
        in_memory = isinstance(self.data.train, ArrayDataset)
        if not in_memory and not isinstance(self.data.train, FileListDataset):
            reasons.append(f"the training set of {self.data.name!r} is neither in memory nor a list of files")
        if not in_memory and want == "auto" and self.device.type != "cuda":
            reasons.append("decoding files on a CPU is faster in DataLoader workers")  # auto: GPU decode only
        if not in_memory and self.data.info.small:
            reasons.append("small images read from files are cropped with padding, which needs equal sizes")
        if type(self.method).train_transform is not Method.train_transform:
            reasons.append(f"method {self.method.name!r} builds its own per-image views")
        if not batched_supports(recipes):
            reasons.append(f"recipes {recipes} have no batched version")
        if want == "device" and reasons:
            raise C.ConfigError("data.pipeline=device is not possible here: " + "; ".join(reasons)
                                + ". Use data.pipeline=reference (or auto)")
        return "reference" if want == "reference" or reasons else "device"

    def _train_loader(self, dataset, sampler: EpochSampler, seed: int, recipes, transform):
        d = self.cfg["data"]
        batches = GlobalBatches(sampler, int(d["batch_size"]), bool(d["drop_last"]), self.world_size, self.rank)
        if self.pipeline == "device":
            views = [BatchedView(r, self.data.info) for r in recipes]
            if isinstance(dataset, ArrayDataset):
                return DeviceBatches(dataset.images, dataset.targets, batches, views, self.device, seed,
                                     self.memory_format)
            return DecodedDeviceBatches(dataset, batches, views, self.device, seed, int(d["num_workers"]),
                                        self.memory_format)
        dataset.transform = transform
        return reference_loader(dataset, batches, seed, int(d["num_workers"]), self.device.type == "cuda")

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {"epoch": epoch, "model": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "best": self.best, "config": self.cfg,
                "num_classes": self.data.num_classes, "classes": self.data.classes,
                "cls_num_list": self.data.cls_num_list, "image_info": dataclasses.asdict(self.data.info),
                "tailcon_format": 1}

    def load_state(self, ckpt: Mapping[str, Any]) -> None:
        self.method.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch = int(ckpt["epoch"])
        self.best = ckpt.get("best")

    # ---- loop ------------------------------------------------------------------------------
    def train_one_epoch(self, epoch: int, num_epochs: int) -> dict[str, float]:
        from tqdm.auto import tqdm

        t = self.cfg["train"]
        self.method.train()
        self.sampler.set_epoch(epoch)
        show = _show_progress(self.cfg) and self.is_main
        max_steps = t.get("max_steps_per_epoch")
        log_every = max(1, int(t.get("log_every", 50)))
        sums: dict[str, torch.Tensor] = {}
        seen = torch.zeros((), device=self.device)
        total = len(self.loader) if not max_steps else min(len(self.loader), int(max_steps))
        if self.paired_loader is not None:
            self.paired_sampler.set_epoch(epoch)
        bar = tqdm(itertools.islice(self.batches(), total), total=total, desc=f"epoch {epoch + 1}/{num_epochs}", leave=False,
                   disable=not show, dynamic_ncols=True)
        start, n_images = time.perf_counter(), 0
        amp = autocast_context(self.device, t.get("amp", "none"))
        for step, (views, labels, extra) in enumerate(bar):
            losses = self.train_step(views, labels, extra, amp)
            loss = losses["loss"]
            bs = labels.shape[0]
            n_images += bs
            seen += bs
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v.detach().float() * bs
            if (step + 1) % log_every == 0 or step + 1 == total:  # the only host sync of the loop
                value = float(D.mean_over_ranks(loss.detach()))  # all ranks stop together on a NaN
                if not math.isfinite(value):
                    parts = {k: float(v.detach()) for k, v in losses.items()}
                    raise NonFiniteLossError(
                        f"non-finite loss at epoch {epoch + 1}, step {step + 1}: {parts}. The last good checkpoint "
                        f"is {self.run_dir / 'last.pt'}; try a lower optim.lr or train.amp=none")
                bar.set_postfix(loss=f"{value:.4f}")
        elapsed = time.perf_counter() - start
        if self.world_size > 1:  # epoch means over the global batch
            keys = sorted(sums)
            packed = D.sum_over_ranks(torch.stack([sums[k] for k in keys] + [seen]))
            sums, seen = dict(zip(keys, packed[:-1])), packed[-1]
            n_images *= self.world_size
        out = {k: float(v / seen) for k, v in sums.items()}
        if not all(math.isfinite(v) for v in out.values()):
            raise NonFiniteLossError(f"non-finite mean loss in epoch {epoch + 1}: {out}")
        out.update(time_s=elapsed, images_per_s=n_images / max(elapsed, 1e-9), images=n_images)
        return out

    def train_step(self, views, labels, extra, amp) -> dict[str, torch.Tensor]:
        """One optimisation step on a batch already on the device; returns the losses."""
        with amp:
            losses = self.step_fn(views, labels, **extra)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return losses

    def batches(self):
        """The epoch's training batches on the device: (views, labels, extra)."""
        if self.paired_loader is not None:
            for (views, labels), paired in zip(self.loader, self.paired_loader):
                yield *self._to_device(views, labels), {"paired": self._to_device(*paired)}
        else:
            for views, labels in self.loader:
                yield *self._to_device(views, labels), {}

    def _to_device(self, views, labels) -> tuple[list[torch.Tensor], torch.Tensor]:
        if isinstance(views, torch.Tensor):
            views = [views]
        # image batches [B, C, H, W] take the configured memory format; other view tensors (DSCL's
        # patch stacks and boxes) keep theirs
        views = [v.to(self.device, non_blocking=True,
                      memory_format=self.memory_format if v.dim() == 4 else torch.preserve_format) for v in views]
        return views, labels.to(self.device, non_blocking=True)

    def evaluate(self, split: str = "test") -> dict[str, Any]:
        dataset = {"test": self.data.test, "val": self.data.val}[split]
        preds, labels = predict(self.method, dataset, self.cfg, self.device, desc=split)
        return shot_accuracy(preds, labels, self.data.cls_num_list)

    def log(self, *args, **kwargs) -> None:
        if self.is_main:
            print(*args, **kwargs)

    def save(self, epoch: int, name: str) -> None:
        if self.is_main:
            save_checkpoint(self.state_dict(epoch), self.run_dir / name)

    def fit(self) -> dict[str, Any]:
        cfg, t = self.cfg, self.cfg["train"]
        num_epochs = int(t["epochs"])
        if self.is_main:  # one writer: rank 0 owns the run directory
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", C.dump(cfg))
        logger = RunLogger(self.run_dir, enabled=self.is_main)
        logger.truncate_after(self.start_epoch)
        selection = "val" if self.data.has_val else "test"
        self.log(f"tailcon: method {self.method.name}, data {self.data.name} ({len(self.data.train)} train images, "
              f"{self.data.num_classes} classes, counts {_counts_summary(self.data.cls_num_list)}), "
              f"model {cfg['model']['backbone']}, {num_epochs} epochs on {self.device}"
              f"{f' x {self.world_size} processes' if self.world_size > 1 else ''}, {self.pipeline} pipeline; "
              f"run dir {self.run_dir}")
        if self.start_epoch:
            self.log(f"tailcon: resuming after epoch {self.start_epoch}")
        if selection == "test":
            self.log("tailcon: this dataset has no validation split: best.pt is selected on the TEST split, "
                  "and final-epoch figures are always reported too")
        eval_every = max(1, int(t.get("eval_every", 1)))
        final: Optional[dict[str, Any]] = None
        try:
            for epoch in range(self.start_epoch, num_epochs):
                seed_everything(self.seed * 1_000_003 + epoch + 1)  # an epoch's draws do not depend on resuming
                lr = lr_at_epoch(epoch, cfg["optim"], num_epochs)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
                self.method.on_epoch_start(epoch, num_epochs)
                stats = self.train_one_epoch(epoch, num_epochs)
                record = {"epoch": epoch + 1, "lr": lr, **stats}
                last = epoch + 1 == num_epochs
                if self.method.evaluates and ((epoch + 1) % eval_every == 0 or last):
                    if self.data.has_val:
                        record["val"] = _summary(self.evaluate("val"))
                    if not self.data.has_val or last:
                        final = self.evaluate("test")
                        record["test"] = _summary(final)
                    score = record[selection]["top1"]
                    if self.best is None or score > self.best["score"]:
                        self.best = {"epoch": epoch + 1, "score": score, "selected_on": selection,
                                     **{s: record[s] for s in ("val", "test") if s in record}}
                        self.save(epoch + 1, "best.pt")
                logger.log_epoch(record)
                self.save(epoch + 1, "last.pt")
                self.log(_epoch_line(record, num_epochs), flush=True)
        finally:
            logger.close()
        if not self.method.evaluates:
            self.log(f"tailcon: stage finished after {num_epochs} epochs ({self.run_dir / 'last.pt'}); "
                  "it has no trained classifier to evaluate")
            return {"epoch": num_epochs, "checkpoint": str(self.run_dir / "last.pt")}
        if final is None:  # resumed a run that had already finished
            final = self.evaluate("test")
        results = {**final, "split": "test", "checkpoint": "last.pt", "epoch": num_epochs, "best": self.best}
        if self.is_main:
            atomic_write_text(self.run_dir / "results.json", json.dumps(results, indent=1))
        rows = [(f"final epoch {num_epochs} (test)", final)]
        if self.best is not None and "test" in self.best:
            rows.append((f"best epoch {self.best['epoch']} (picked on {selection})", self.best["test"]))
        self.log(format_report(rows, title=f"Results on the test split ({final['num_images']} images)"))
        if selection == "test":
            self.log("note: the 'best epoch' row is selected on the test split itself (no validation split); "
                  "the final-epoch row is the unbiased figure")
        return results


def _summary(m: Mapping[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("top1", "many", "medium", "few")}


def _counts_summary(counts) -> str:
    return f"{max(counts)}..{min(counts)}" if counts else "-"


def _epoch_line(r: Mapping[str, Any], num_epochs: int) -> str:
    line = (f"epoch {r['epoch']:>3d}/{num_epochs} loss {r['loss']:.4f} lr {r['lr']:.4g} "
            f"{r['time_s']:.1f}s {r['images_per_s']:.0f} img/s")
    for split in ("val", "test"):
        if split in r:
            m = r[split]
            line += f" | {split} top1 {m['top1']:.2f}"
    return line


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    """Train from a resolved config; ``cfg['resume']`` continues a run directory or checkpoint.

    A method with several stages (``Method.stages``) runs them one after the other in
    ``RUN_DIR/<stage>``; a stage that already finished is skipped on resume.
    """
    D.init_from_env()  # under torchrun: join the process group
    if cfg.get("resume"):  # a resumed run continues in its own directory
        cfg["run_dir"] = str(run_dir_of(cfg["resume"]))
    cfg["run_dir"] = D.broadcast_object(cfg.get("run_dir") or C.default_run_dir(cfg.get("name")))
    stages = get_method(cfg["method"]["name"]).stages(cfg)
    if not stages:
        result = _train_single(cfg)
        D.barrier()
        return result
    root = Path(cfg["run_dir"])
    main = D.is_main_process()
    if main:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / "stages.json", json.dumps([name for name, _ in stages]))
        atomic_write_text(root / "config.yaml", C.dump({**cfg, "resume": None}))
    result: dict[str, Any] = {}
    for name, overrides in stages:
        stage_cfg = C.merge(cfg, overrides)
        stage_dir = root / name
        stage_cfg["run_dir"] = str(stage_dir)
        stage_cfg["resume"] = str(stage_dir) if (stage_dir / "last.pt").is_file() else None
        if main:
            print(f"tailcon: stage {name!r} -> {stage_dir}")
        result = _train_single(stage_cfg)
        D.barrier()  # the stage's checkpoints are written before any rank moves on
    if main and (root / stages[-1][0] / "results.json").is_file():
        atomic_write_text(root / "results.json", (root / stages[-1][0] / "results.json").read_text())
    return result


def _train_single(cfg: dict[str, Any]) -> dict[str, Any]:
    ckpt = load_checkpoint(cfg["resume"]) if cfg.get("resume") else None
    trainer = Trainer(cfg)
    if ckpt is not None:
        trainer.load_state(ckpt)
    return trainer.fit()


def evaluate_checkpoint(path: str | os.PathLike, split: str = "test", overrides: tuple[str, ...] = (),
                        which: str = "last") -> dict[str, Any]:
    """Evaluate a run directory (its ``last.pt`` or ``best.pt``) or a checkpoint file, print the
    report and write ``results.json`` next to the checkpoint."""
    p = Path(path)
    if p.is_dir() and not (p / f"{which}.pt").is_file() and (p / "stages.json").is_file():
        p = p / json.loads((p / "stages.json").read_text())[-1]  # a staged run: its last stage
    ckpt_path = p / f"{which}.pt" if p.is_dir() else p
    ckpt = load_checkpoint(ckpt_path)
    cfg = C.merge(ckpt["config"], C.parse_overrides(overrides))
    device = resolve_device(cfg.get("device", "auto"))
    data = build_data(cfg)
    if split == "val" and data.val is None:
        raise C.ConfigError(f"dataset {data.name!r} has no validation split")
    method = build_method(cfg, data)
    method.load_state_dict(ckpt["model"])
    method.to(device)
    dataset = data.val if split == "val" else data.test
    dataset.transform = build_eval_transform(data.info)
    preds, labels = predict(method, dataset, cfg, device, desc=split)
    counts = ckpt.get("cls_num_list") or data.cls_num_list
    m = shot_accuracy(preds, labels, counts)
    results = {**m, "split": split, "checkpoint": ckpt_path.name, "epoch": ckpt["epoch"], "best": ckpt.get("best")}
    atomic_write_text(ckpt_path.parent / "results.json", json.dumps(results, indent=1))
    print(format_report([(f"{ckpt_path.name} epoch {ckpt['epoch']} ({split})", m)],
                        title=f"{ckpt_path}: {split} split, {m['num_images']} images"))
    best = ckpt.get("best")
    if best and best.get("selected_on") == "test":
        print("note: best.pt of this run was selected on the test split (the dataset has no validation split)")
    return results
