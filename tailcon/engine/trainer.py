"""The one training / evaluation loop every method plugs into.

A method (tailcon.methods) supplies its model parts, the augmentation recipe of each view and a
``training_step`` that returns its losses; this loop owns everything else: data loading,
optimisation, mixed precision, schedules, evaluation, checkpoints, logs and resumption.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import time
import warnings
from typing import Any, Mapping, Optional

import torch

from .. import config, distributed
from ..resolution import schedule_keys, schedule_warnings
from ..errors import TailconError
from ..data import EpochSampler, FileListDataset, build_data, build_eval_transform, build_train_transform
from ..data.datasets import raise_unreadable, scan_images
from ..data.overlap import find_overlap
from ..data.loaders import GlobalBatches, seed_everything
from ..methods import build_method
from ..models import check_input_size
from ..models.grouped_bn import convert_grouped_batchnorm, images_per_view
from ..models.sync_batchnorm import convert_sync_batchnorm
from ..models.trainable import set_trainable
from .context import RunContext
from .device import autocast_context
from .evaluation import predict_dataset, show_progress
from .geometry import knn_predict
from .host import tune_host_allocator
from .logging import RunLogger
from .metrics import counted, evaluation_metrics, format_report
from .optim import build_optimizer
from .pipeline import build_train_loader, choose_pipeline
from .manifest import finish_manifest, start_manifest
from ..rundir import RunDir, RunDirError, atomic_write_text, save_checkpoint
from .schedule import lr_at_epoch, lr_at_position


class NonFiniteLossError(TailconError, RuntimeError):
    """The loss became NaN or infinite; the message says where and what to try."""


class _TrainingStep(torch.nn.Module):
    """What DDP wraps: its forward is the method's training step, so DDP's gradient hooks see it."""

    def __init__(self, method: torch.nn.Module):
        super().__init__()
        self.method = method

    def forward(self, views, labels, extra):
        return self.method.training_step(views, labels, **extra)


class Trainer:
    """One run (or one stage) of training in ``cfg["run_dir"]``, from a :class:`RunContext`
    (:func:`tailcon.engine.stages.train` builds it: the validated config, device, precision, the
    run directory's lock and the checkpoint to continue). :meth:`from_config` builds one from a
    config alone (tests, ``tailcon bench``)."""

    def __init__(self, context: RunContext):
        self.context = context
        self.cfg, self.device, self.amp = context.cfg, context.device, context.amp
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        self.seed = int(self.cfg["seed"])
        self.run = RunDir(self.cfg["run_dir"]) if self.cfg["run_dir"] else None  # None: nothing is saved (bench)
        resume_from = context.resume_from
        self._set_up_process()
        self.data = self._build_data(resume_from)
        self.method = self._build_method(fresh=resume_from is None)
        self.step_fn = self._build_step_function()
        self._build_optimization()
        self._build_loaders()
        self.start_epoch = 0
        self.best: Optional[dict[str, Any]] = None
        self.pending: Optional[dict[str, Any]] = None  # an epoch trained and saved but not yet evaluated
        if resume_from is not None:
            self.load_state(resume_from)
        else:
            self.method.initialize()  # e.g. a linear stage takes stage 1's weights

    @classmethod
    def from_config(cls, cfg: dict[str, Any], resume_from: Optional[Mapping[str, Any]] = None) -> "Trainer":
        return cls(RunContext.of(cfg, resume_from))

    # ---- builders ---------------------------------------------------------------------------
    def _set_up_process(self) -> None:
        if self.device.type == "cpu":
            tune_host_allocator()
        seed_everything(self.seed)
        if self.cfg["train"]["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def _build_data(self, resume_from: Optional[Mapping[str, Any]]):
        data = build_data(self.cfg)
        if resume_from is not None:
            check_same_data(resume_from, data)
        # a run (not tailcon bench): every image readable before the first step, no test image in train
        self.overlap = self._check_images(data) if self.run is not None else {}
        eval_tf = build_eval_transform(data.info)
        data.test.transform = eval_tf
        if data.val is not None:
            data.val.transform = eval_tf
        return data

    def _check_images(self, data) -> dict[str, Any]:
        """Decode every image file of every split once (each process its share; an unreadable one
        is an error before anything is written), then find the evaluation images whose content is
        also in the training split (reusing the files' digests of that pass on one process);
        returns {split: {count, examples}} and warns about each split that has any."""
        digests = {}
        if self.cfg["data"]["check_images"]:
            for split, dataset in (("train", data.train), ("val", data.val), ("test", data.test)):
                if isinstance(dataset, FileListDataset):
                    bad, digests[split] = scan_images(dataset, split, workers=max(2, int(self.cfg["data"]["num_workers"])),
                                                      shard=(self.rank, self.world_size), say=self.log)
                    total = int(distributed.sum_over_ranks(torch.tensor(len(bad))))
                    raise_unreadable(bad, total, len(dataset.paths), split)
        if not self.is_main:
            return {}
        overlap = find_overlap(data.train, {"val": data.val, "test": data.test}, digests if self.world_size == 1 else None)
        for split, found in overlap.items():
            if found["count"] and not self.cfg["data"]["allow_overlap"]:
                self.log(f"tailcon: warning: {found['count']} {split} images are also in the training split (same "
                         f"content), e.g. {', '.join(found['examples'])}: every {split} figure of this run is "
                         "inflated. Remove them from one split, or set data.allow_overlap=true if that is intended")
        return overlap

    def _build_method(self, fresh: bool):
        """The method on the device, in the configured BatchNorm layout and trainable parts; a
        fresh run starts its backbone from ``model.pretrained``."""
        m = self.cfg["model"]
        if fresh and m["require_pretrained"] and not m["pretrained"]:
            raise config.ConfigError(f"this config trains from pre-trained weights (model.require_pretrained=true): "
                                     f"give model.pretrained=PATH, a {m['backbone']} weights file (torchvision/timm "
                                     ".pth or .safetensors) or a tailcon run")
        method = build_method(self.cfg, self.data.num_classes, self.data.cls_num_list, load_pretrained=fresh)
        check_input_size(method.backbone, self.data.info.size, m["backbone"])  # before the run writes anything
        if m["bn_batch"]:  # the authors' per-GPU BatchNorm batches on any number of devices
            convert_grouped_batchnorm(method, m["bn_batch"], m["bn_layout"], skip=method.replicated_modules)
        set_trainable(method, m["trainable"])
        if m["sync_bn"] and self.world_size > 1:
            convert_sync_batchnorm(method, self.device, skip=method.replicated_modules)
        self.memory_format = torch.channels_last if self.cfg["train"]["channels_last"] else torch.contiguous_format
        method.to(self.device, memory_format=self.memory_format)
        if self.cfg["train"]["compile"]:  # in place: checkpoint keys stay those of the plain module
            mode = self.cfg["train"]["compile"]
            method.backbone.compile(mode=None if mode is True else mode)
        return method

    def _build_step_function(self):
        """The method's training step, wrapped in DDP under torchrun."""
        if self.world_size == 1:
            return self.method.training_step
        from torch.nn.parallel import DistributedDataParallel as DDP

        # buffers (queues, BN statistics) are not broadcast: queues are updated identically on
        # every rank from gathered keys; use model.sync_bn for identical BN statistics
        with warnings.catch_warnings():  # newer torch renames broadcast_buffers; >= 2.4 needs this name
            warnings.simplefilter("ignore", FutureWarning)
            ddp = DDP(_TrainingStep(self.method),
                      device_ids=[self.device.index] if self.device.type == "cuda" else None,
                      broadcast_buffers=False, find_unused_parameters=self.method.has_unused_parameters)
        return lambda views, labels, **extra: ddp(views, labels, extra)

    def _build_optimization(self) -> None:
        """Optimiser, gradient accumulation and clipping, loss scaling, the weights' EMA."""
        t, o = self.cfg["train"], self.cfg["optim"]
        self.optimizer = build_optimizer(self.method, o)
        self.accumulate = int(t["accumulate"])
        self.clip_grad_norm = float(o["clip_grad_norm"]) if o["clip_grad_norm"] is not None else None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=(self.amp == "fp16"))
        self.ema = None
        if t["ema"] is not None:  # a copy of the weights (and BN statistics), averaged after every step
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.method, multi_avg_fn=get_ema_multi_avg_fn(float(t["ema"])),
                                     use_buffers=True)

    def _build_loaders(self) -> None:
        """The training batches (and a method's paired batches), through the chosen pipeline."""
        d, info = self.cfg["data"], self.data.info
        paired = self.method.paired_batch()  # e.g. Hybrid's class-balanced CE batch, drawn alongside
        self.pipeline = choose_pipeline(d["pipeline"], self.method, self.data, self.device,
                                        paired[1] if paired else ())
        self.sampler = EpochSampler(self.data.train.targets, d["sampler"], seed=self.seed)
        self.loader = self._train_loader(self.data.train, self.sampler, self.seed, self.method.view_recipes(),
                                         self.method.train_transform(info))
        if GlobalBatches(self.sampler, int(d["batch_size"]), bool(d["drop_last"]), self.world_size).dropped_single:
            self.log(f"tailcon: note: each epoch's last batch would hold one image per process ({len(self.data.train)} "
                     f"images, batch {d['batch_size']}); BatchNorm cannot normalise one image, so it is left out")
        self.paired_loader = None
        if paired is not None:
            sampler_mode, recipes = paired
            self.paired_sampler = EpochSampler(self.data.train.targets, sampler_mode, seed=self.seed + 1)
            self.paired_loader = self._train_loader(copy.copy(self.data.train), self.paired_sampler, self.seed + 1,
                                                    recipes, build_train_transform(recipes, info))

    def _train_loader(self, dataset, sampler: EpochSampler, seed: int, recipes, transform):
        return build_train_loader(self.pipeline, dataset, sampler, seed, recipes, transform, self.data, self.cfg,
                                  self.device, self.world_size, self.rank, self.memory_format)

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self, epoch: int) -> dict[str, Any]:
        """Everything a checkpoint holds; only tensors and plain containers (weights-only loadable)."""
        return {"epoch": epoch, "model": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "best": self.best, "pending_eval": self.pending,
                "config": config.plain(self.cfg), "data_name": self.data.name, "num_classes": self.data.num_classes,
                "classes": self.data.classes, "cls_num_list": self.data.cls_num_list,
                "image_info": dataclasses.asdict(self.data.info), "tailcon_format": 2,
                **({"ema": self.ema.state_dict()} if self.ema is not None else {})}

    def load_state(self, ckpt: Mapping[str, Any]) -> None:
        self.method.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            if "ema" not in ckpt:
                raise RunDirError("this checkpoint holds no EMA weights: train.ema can be set only when a run starts")
            self.ema.load_state_dict(ckpt["ema"])
        self.start_epoch = int(ckpt["epoch"])
        self.best = ckpt.get("best")
        self.pending = ckpt.get("pending_eval")

    # ---- loop ------------------------------------------------------------------------------
    def train_one_epoch(self, epoch: int, num_epochs: int) -> dict[str, float]:
        from tqdm.auto import tqdm

        t = self.cfg["train"]
        self.method.train()
        self.sampler.set_epoch(epoch)
        show = show_progress(self.cfg) and self.is_main
        plain = self.is_main and not show
        max_steps = t["max_steps_per_epoch"]
        log_every = int(t["log_every"])
        sums: dict[str, torch.Tensor] = {}
        seen = torch.zeros((), device=self.device)
        total = len(self.loader) if not max_steps else min(len(self.loader), int(max_steps))
        if self.paired_loader is not None:
            self.paired_sampler.set_epoch(epoch)
        bar = tqdm(itertools.islice(self.batches(), total), total=total, desc=f"epoch {epoch + 1}/{num_epochs}", leave=False,
                   disable=not show, dynamic_ncols=True)
        start, n_images = time.perf_counter(), 0
        amp = autocast_context(self.device, self.amp)
        per_iteration = bool(self.cfg["optim"]["per_iteration"])
        for step, (views, labels, extra) in enumerate(bar):
            if per_iteration:  # host-side floats: no sync
                lr = lr_at_position(epoch + step / total, self.cfg["optim"], num_epochs)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
            losses = self.train_step(views, labels, extra, amp, micro=step,
                                     last=step + 1 == total)
            loss = losses["loss"]
            bs = labels.shape[0]
            n_images += bs
            seen += bs
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v.detach().float() * bs
            if (step + 1) % log_every == 0 or step + 1 == total:  # the only host sync of the loop
                value = float(distributed.mean_over_ranks(loss.detach()))  # all ranks stop together on a NaN
                if not math.isfinite(value):
                    parts = {k: float(v.detach()) for k, v in losses.items()}
                    raise NonFiniteLossError(
                        f"non-finite loss at epoch {epoch + 1}, step {step + 1}: {parts}. {self.non_finite_hint()}")
                bar.set_postfix(loss=f"{value:.4f}")
                if plain and step + 1 < total:  # off a terminal (a scheduler's log): a line instead of a bar
                    lr_now = self.optimizer.param_groups[0]["lr"]
                    self.log(_step_line(epoch + 1, num_epochs, step + 1, total, losses, lr_now,
                                        n_images * self.world_size, time.perf_counter() - start), flush=True)
        elapsed = time.perf_counter() - start
        if self.world_size > 1:  # epoch means over the global batch
            keys = sorted(sums)
            packed = distributed.sum_over_ranks(torch.stack([sums[k] for k in keys] + [seen]))
            sums, seen = dict(zip(keys, packed[:-1])), packed[-1]
            n_images *= self.world_size
        out = {k: float(v / seen) for k, v in sums.items()}
        if not all(math.isfinite(v) for v in out.values()):
            raise NonFiniteLossError(f"non-finite mean loss in epoch {epoch + 1}: {out}. {self.non_finite_hint()}")
        out.update(time_s=elapsed, images_per_s=n_images / max(elapsed, 1e-9), images=n_images)
        return out

    def train_step(self, views, labels, extra, amp, micro: int = 0, last: bool = True) -> dict[str, torch.Tensor]:
        """The forward and backward pass of one batch already on the device, and the optimiser
        step once ``train.accumulate`` batches (``micro`` counts them in the epoch; an epoch's
        ``last`` batch always steps) have summed their gradients; returns the losses."""
        k = self.accumulate
        with amp, images_per_view(labels.shape[0]):
            losses = self.step_fn(views, labels, **extra)
        if micro % k == 0:
            self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"] / k if k > 1 else losses["loss"]).backward()
        if (micro + 1) % k == 0 or last:
            if self.clip_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the fp16-scaled ones
                torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update_parameters(self.method)
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

    def evaluate(self, split: str = "test", model: Optional[torch.nn.Module] = None) -> dict[str, Any]:
        dataset = {"test": self.data.test, "val": self.data.val}[split]
        pred = predict_dataset(model or self.method, dataset, self.cfg, self.device, desc=split, info=self.data.info)
        return evaluation_metrics(pred, self.data.cls_num_list)

    @torch.no_grad()
    def knn_monitor(self, k: int = 20, temperature: float = 0.07) -> dict[str, Any]:
        """kNN top-1 (overall and Many/Medium/Few) of the backbone features: every val (else test)
        image votes with its k most cosine-similar training images, each weighted exp(sim / T)
        (solo-learn's monitor). Training images go through the test-time transform."""
        train = copy.copy(self.data.train)
        train.transform = build_eval_transform(self.data.info)
        split = "val" if self.data.has_val else "test"
        dataset = self.data.val if split == "val" else self.data.test
        bank = predict_dataset(self.method, train, self.cfg, self.device, desc="knn bank", info=self.data.info,
                               keep_features=True)
        query = predict_dataset(self.method, dataset, self.cfg, self.device, desc=f"knn {split}",
                                info=self.data.info, keep_features=True)
        preds = knn_predict(query.features, bank.features, bank.labels, self.data.num_classes, k, temperature)
        from .metrics import shot_accuracy

        out = shot_accuracy(preds, query.labels, self.data.cls_num_list)
        return {"split": split, "k": k, **{g: out[g] for g in ("top1", "many", "medium", "few")}}

    def log(self, *args, **kwargs) -> None:
        if self.is_main:
            print(*args, **kwargs)

    def save(self, epoch: int, which: str) -> None:
        if self.is_main:
            save_checkpoint(self.state_dict(epoch), self.run.checkpoint(which))

    def evaluate_epoch(self, record: dict[str, Any], last: bool) -> Optional[dict[str, Any]]:
        """Add the epoch's val/test figures and ``eval_time_s`` to ``record``, keep ``best.pt``;
        returns the test figures of the last epoch. With a validation split, the test split is
        evaluated at the last epoch and at every new best-on-val epoch, so the best checkpoint's
        test figures are known (what BCL reports)."""
        start = time.perf_counter()
        selection = "val" if self.data.has_val else "test"
        final = None
        if self.data.has_val:
            record["val"] = _summary(self.evaluate("val"))
        if not self.data.has_val or last:
            final = self.evaluate("test")
            record["test"] = _summary(final)
        if self.ema is not None:  # the averaged weights, beside the raw ones (selection stays on the raw ones)
            record["ema"] = {s: _summary(self.evaluate(s, self.ema.module)) for s in ("val", "test") if s in record}
        score = record[selection]["top1"]
        if self.best is None or score > self.best["score"]:
            if "test" not in record:
                record["test"] = _summary(self.evaluate("test"))
            self.best = {"epoch": record["epoch"], "score": score, "selected_on": selection,
                         **{s: record[s] for s in ("val", "test") if s in record}}
            self.save(record["epoch"], "best")
        record["eval_time_s"] = time.perf_counter() - start
        return final

    def fit(self) -> dict[str, Any]:
        cfg, t = self.cfg, self.cfg["train"]
        num_epochs = int(t["epochs"])
        if self.is_main:  # one writer: rank 0 owns the run directory
            self.run.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run.config, config.dump(cfg))
            start_manifest(self.run, device=self.device, world_size=self.world_size, train=self.data.train,
                           cls_num_list=self.data.cls_num_list, overlap=self.overlap)
        logger = RunLogger(self.run.path, enabled=self.is_main, config=cfg)
        logger.truncate_after(self.start_epoch if self.pending is None else self.start_epoch - 1)
        selection = "val" if self.data.has_val else "test"
        self.log(f"tailcon: method {self.method.name}, data {self.data.name} ({counted(len(self.data.train), 'train image')}, "
                 f"{counted(self.data.num_classes, 'class', 'classes')}, "
                 f"counts {_counts_summary(self.data.cls_num_list)}), "
                 f"model {cfg['model']['backbone']}, {counted(num_epochs, 'epoch')} on {self.device}"
                 f"{f' x {self.world_size} processes' if self.world_size > 1 else ''}, {self.pipeline} pipeline; "
                 f"run dir {self.run.path}")
        if t["scaled_from"] is not None:
            keys = ", ".join(f"{k} {config.get(cfg, k)}" for k in schedule_keys(cfg))
            self.log(f"tailcon: schedule scaled from the recipe's {t['scaled_from']} epochs to {num_epochs}: {keys}")
        for warning in schedule_warnings(cfg):
            self.log(f"tailcon: warning: {warning}; train.scale_schedule=true scales the recipe's schedule to "
                     "train.epochs")
        if self.start_epoch:
            self.log(f"tailcon: resuming after epoch {self.start_epoch}")
        if selection == "test":
            self.log("tailcon: this dataset has no validation split: best.pt is selected on the TEST split, "
                     "and final-epoch figures are always reported too")
        eval_every = int(t["eval_every"])
        final: Optional[dict[str, Any]] = None
        try:
            if self.pending is not None:  # killed (or failed) while evaluating: finish that epoch first
                record, self.pending = dict(self.pending), None
                self.log(f"tailcon: evaluating epoch {record['epoch']}, saved before its evaluation")
                final = self.evaluate_epoch(record, record["epoch"] == num_epochs)
                logger.log_epoch(record)
                self.save(record["epoch"], "last")
            for epoch in range(self.start_epoch, num_epochs):
                seed_everything(self.seed * 1_000_003 + epoch + 1)  # an epoch's draws do not depend on resuming
                lr = lr_at_epoch(epoch, cfg["optim"], num_epochs)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
                self.method.on_epoch_start(epoch, num_epochs)
                stats = self.train_one_epoch(epoch, num_epochs)
                record = {"epoch": epoch + 1, "lr": lr, **stats}
                last = epoch + 1 == num_epochs
                knn_every = t["knn_every"]
                if knn_every and ((epoch + 1) % knn_every == 0 or last):  # also in pre-training stages
                    record["knn"] = self.knn_monitor()
                evaluates = self.method.evaluates and ((epoch + 1) % eval_every == 0 or last)
                # the epoch's training is saved before evaluating it: an evaluation failure loses no training
                self.pending = record if evaluates else None
                self.save(epoch + 1, "last")
                self.pending = None
                if evaluates:
                    final = self.evaluate_epoch(record, last)
                logger.log_epoch(record)
                if evaluates:
                    self.save(epoch + 1, "last")  # now with its evaluation and the best epoch so far
                self.log(_epoch_line(record, num_epochs), flush=True)
        finally:
            logger.close()
        if not self.method.evaluates:
            self.log(f"tailcon: stage finished after {counted(num_epochs, 'epoch')} ({self.run.checkpoint('last')}); "
                     "it has no trained classifier to evaluate")
            if self.is_main:
                finish_manifest(self.run)
            return {"epoch": num_epochs, "checkpoint": str(self.run.checkpoint("last"))}
        if final is None:  # resumed a run that had already finished
            final = self.evaluate("test")
        results = {**final, "split": "test", "checkpoint": self.run.checkpoint("last").name, "epoch": num_epochs,
                   "best": self.best, "train_overlap": self.overlap}
        rows = [(f"final epoch {num_epochs} (test)", final)]
        if self.ema is not None:
            results["ema"] = self.evaluate("test", self.ema.module)
            rows.append((f"final epoch {num_epochs}, EMA weights", results["ema"]))
        if self.best is not None and "test" in self.best:
            rows.append((f"best epoch {self.best['epoch']} (picked on {selection})", self.best["test"]))
        paper = {k: v for k, v in cfg["paper"].items() if v is not None and k != "withheld"}
        if cfg["paper"].get("withheld"):  # this run's recipe is not the one the figure is for
            results["paper_withheld"] = cfg["paper"]["withheld"]
        elif paper.get("top1") is not None:  # the published figure this config reproduces, and how far off
            results["paper"] = paper
            results["vs_paper"] = {g: final[g] - paper[g] for g in ("top1", "many", "medium", "few")
                                   if paper.get(g) is not None and final.get(g) is not None}
        self.log(format_report(rows, title=f"Results on the test split ({final['num_images']} images)"))
        if "vs_paper" in results:
            figures = ", ".join(f"{g} {paper[g]:.2f} (final epoch {diff:+.2f})" for g, diff in results["vs_paper"].items())
            self.log(f"paper: {figures} [{paper.get('source', 'no source given')}]")
        elif "paper_withheld" in results:
            self.log(f"paper: no comparison, {results['paper_withheld']} (the published figure is for that recipe)")
        if selection == "test":
            self.log("note: the 'best epoch' row is selected on the test split itself (no validation split); "
                     "the final-epoch row is the unbiased figure")
        if self.is_main:
            self.run.write_json(self.run.results, results)
            finish_manifest(self.run)
        return results

    def non_finite_hint(self) -> str:
        """What to say after a non-finite loss: the checkpoint to resume from if there is one,
        and the classes without training images if there are any."""
        last = self.run.checkpoint("last") if self.run is not None else None
        hint = f"The last good checkpoint is {last}; " if last and last.is_file() else "No checkpoint was written yet; "
        empty = [i for i, n in enumerate(self.data.cls_num_list) if n == 0]
        if empty:
            hint += (f"classes {empty[:20]} have no training image (data.allow_empty_classes=true), which "
                     "class-balanced sampling and class-prior losses cannot handle; ")
        return hint + "try a lower optim.lr or train.amp=none"


def _summary(m: Mapping[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("top1", "many", "medium", "few", "top5", "ece") if k in m}


def _counts_summary(counts) -> str:
    return f"{max(counts)}..{min(counts)}" if counts else "-"


def _step_line(epoch: int, num_epochs: int, step: int, steps: int, losses: Mapping[str, torch.Tensor], lr: float,
               images: int, elapsed: float) -> str:
    """``epoch 3/200 step 50/97 loss 1.2345 (ce 0.9 con 0.33) lr 0.1 412 img/s ETA 0:00:12`` (this epoch)."""
    parts = {k: float(v.detach()) for k, v in losses.items()}  # at the log point, where the loop syncs anyway
    loss = parts.pop("loss")
    detail = " ".join(f"{k.removeprefix('loss_')} {v:.4g}" for k, v in parts.items())
    eta = int(elapsed / step * (steps - step))
    return (f"epoch {epoch}/{num_epochs} step {step}/{steps} loss {loss:.4f}{f' ({detail})' if detail else ''} "
            f"lr {lr:.4g} {images / max(elapsed, 1e-9):.0f} img/s "
            f"ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}")


def _epoch_line(r: Mapping[str, Any], num_epochs: int) -> str:
    line = (f"epoch {r['epoch']:>3d}/{num_epochs} loss {r['loss']:.4f} lr {r['lr']:.4g} "
            f"{r['time_s']:.1f}s {r['images_per_s']:.0f} img/s")
    for split in ("val", "test"):
        if split in r:
            m = r[split]
            line += f" | {split} top1 {m['top1']:.2f}"
            if split in r.get("ema", {}):
                line += f" (EMA {r['ema'][split]['top1']:.2f})"
    if "knn" in r:
        line += f" | kNN {r['knn']['split']} top1 {r['knn']['top1']:.2f}"
    return line


def check_same_data(ckpt: Mapping[str, Any], data) -> None:
    """A resumed run must train on the data it started with: same dataset, classes, class counts."""
    saved = {"dataset": ckpt.get("data_name", data.name), "number of classes": ckpt["num_classes"],
             "class counts": list(ckpt["cls_num_list"])}
    now = {"dataset": data.name, "number of classes": data.num_classes, "class counts": list(data.cls_num_list)}
    diff = [f"{k}: {_short(saved[k])} in the checkpoint, {_short(now[k])} now" for k in saved if saved[k] != now[k]]
    if diff:
        raise RunDirError("cannot resume: the training data differs from the run's (" + "; ".join(diff) + "); "
                          "point data.* at the run's data, or start a new run with another run_dir=")


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."
