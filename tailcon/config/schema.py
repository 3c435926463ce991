"""The config schema: every key of a tailcon config, in one table.

Each :class:`Key` gives a key's default, its type and value rule, and its kind:

* ``recipe``: it changes what is learned (the hyperparameter tables list these);
* ``plumbing``: paths, workers, logging, how a run executes;

and whether a resumed run may change it (``resume_safe``: it cannot change what was computed so
far). :data:`DEFAULTS`, the type and value checks, the resume allow-list and the hyperparameter
tables (:mod:`tailcon.tools.sources`) all read from this table. The keys under ``method.`` belong
to the chosen method, which declares and checks them itself (:class:`tailcon.methods.Method`).

A rule whose values come from a registry that plugins extend (datasets, backbones, augmentation
recipes, samplers) is named here by ``registry`` and supplied by :mod:`tailcon.resolution`, which
sits above those registries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from ..plugins import MODULE_NAME
from .rules import Rule, integer, list_of, number, one_of

RECIPE, PLUMBING = "recipe", "plumbing"


@dataclass(frozen=True)
class Key:
    name: str  # dotted: "optim.lr"
    default: Any
    rule: Optional[Rule] = None  # the value's range (None: its type alone)
    kind: str = RECIPE
    resume_safe: bool = False  # a resumed run may change it
    listed: bool = False  # every hyperparameter table shows it (else only where a file sets it)
    types: Optional[tuple[type, ...]] = None  # default: the default's type
    nullable: bool = False  # also takes null (an empty value) though its default is not null
    choices: Optional[tuple[str, ...]] = None  # a fixed set of values (the rule is one_of(choices))
    registry: Optional[str] = None  # a set of values that plugins extend (tailcon.resolution)
    doc: str = ""


def _device(v: Any) -> Optional[str]:
    return None if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(v)) else "auto, cpu, cuda, cuda:N or mps"


def _module_names(v: Any) -> Optional[str]:
    ok = isinstance(v, list) and all(isinstance(m, str) and MODULE_NAME.fullmatch(m) for m in v)
    return None if ok else "a list of module names"


def _compile_mode(v: Any) -> Optional[str]:
    return None if v in (True, False, "default", "reduce-overhead", "max-autotune") \
        else "true, false, default, reduce-overhead or max-autotune"


_SEED = integer(0, 2**32 - 1)
_PERCENT = number(0, 100)
_POSITIVE = number(0, lo_open=True)

SCHEMA: tuple[Key, ...] = (
    Key("custom_imports", [], _module_names, PLUMBING, resume_safe=True, types=(list,),
        doc="modules imported first: your own methods, backbones, datasets (tailcon.plugins)"),
    Key("name", None, None, PLUMBING, resume_safe=True, types=(str,),
        doc="set from the config file name; used for the default run_dir"),
    Key("seed", 0, _SEED),
    Key("run_dir", None, None, PLUMBING, resume_safe=True, types=(str,), doc="default: runs/<date>-<name>"),
    Key("resume", None, None, PLUMBING, resume_safe=True, types=(str,),
        doc="a run directory or checkpoint to continue from; auto: run_dir if it holds a run"),
    Key("device", "auto", _device, PLUMBING, resume_safe=True, doc="auto | cpu | cuda | cuda:N | mps"),
    # the published figures this config reproduces (reproduction configs set them): shown beside
    # tailcon's in results.json, compare and report; changes nothing trained
    *(Key(f"paper.{g}", None, _PERCENT, PLUMBING, resume_safe=True, types=(int, float))
      for g in ("top1", "many", "medium", "few")),
    Key("paper.source", None, None, PLUMBING, resume_safe=True, types=(str,)),
    # the config whose recipe the figures belong to (set when a file with paper figures is read);
    # a run whose recipe differs from it gets no figures, and ``paper.withheld`` says why
    Key("paper.config", None, None, PLUMBING, resume_safe=True, types=(str,),
        doc="the config (shipped name or file) the published figures are for; set by tailcon"),
    Key("paper.withheld", None, None, PLUMBING, resume_safe=True, types=(str,),
        doc="set by tailcon: the recipe keys that differ from paper.config's, when the figures were withheld"),
    Key("method.name", "ce", listed=False, doc="the method; its own keys follow under method. (tailcon.methods)"),
    # ---- data ----
    Key("data.name", "digits_lt", registry="datasets", listed=True,
        doc="digits_lt | cifar10_lt | cifar100_lt | imagenet_lt | places_lt | inat2018 | list | folder"),
    Key("data.root", None, None, PLUMBING, resume_safe=True, types=(str,)),
    Key("data.download", False, None, PLUMBING, resume_safe=True),
    Key("data.imbalance_factor", 10, number(1), listed=True),
    Key("data.imbalance_profile", "exp", choices=("exp", "step")),
    Key("data.max_per_class", None, integer(1), types=(int,),
        doc="None: the dataset's own (5000 CIFAR-10, 500 CIFAR-100)"),
    Key("data.num_classes", None, integer(1, 1_000_000), types=(int,),
        doc="list datasets: None = largest training label + 1"),
    Key("data.allow_empty_classes", False, doc="True: classes without a training image are intended (else an error)"),
    Key("data.max_image_pixels", 89_478_485, integer(1), PLUMBING, resume_safe=True, nullable=True,
        doc="larger images are refused, naming the file (PIL's default); None: no limit"),
    Key("data.subset_seed", 0, _SEED, doc="seed of the NumPy RNG that picks the kept images of a long-tailed subset"),
    Key("data.train_list", None, None, types=(str,), doc="list datasets: files relative to root"),
    Key("data.val_list", None, None, types=(str,)),
    Key("data.test_list", None, None, types=(str,)),
    Key("data.train_dir", "train", doc="folder datasets: sub-folders of root"),
    Key("data.val_dir", None, None, types=(str,)),
    Key("data.test_dir", "test"),
    Key("data.image_size", None, integer(1), listed=True, types=(int,),
        doc="None: dataset default (32 CIFAR, 16 digits, 224 file datasets)"),
    Key("data.resize_size", None, integer(1), types=(int,),
        doc="file datasets, test: resize short side (default image_size*256/224)"),
    Key("data.mean", None, list_of(number()), types=(list,), doc="None: dataset default; 3 values (RGB)"),
    Key("data.std", None, list_of(number(0, lo_open=True)), types=(list,)),
    Key("data.train_augment", "crop_flip", registry="augment recipes", listed=True,
        doc="see tailcon.data.transforms.RECIPES"),
    Key("data.batch_size", 128, integer(1), listed=True, doc="the global batch: split over the processes under torchrun"),
    Key("data.eval_batch_size", 256, integer(1), PLUMBING, resume_safe=True),
    Key("data.pipeline", "auto", kind=PLUMBING, choices=("auto", "device", "reference"),
        doc="auto: on-device batched augmentation for in-memory (CIFAR-scale) data when the method's views allow "
            "it, else reference; device | reference force one (tailcon.data.loaders). Not resume-safe: the two "
            "draw different augmentations"),
    Key("data.num_workers", 2, integer(0), PLUMBING, resume_safe=True),
    Key("data.allow_overlap", False, None, PLUMBING, resume_safe=True,
        doc="true: images found in both the training and an evaluation split (by content) are intended; no warning"),
    Key("data.check_images", True, None, PLUMBING, resume_safe=True,
        doc="decode every image file of every split once before training (a thread pool; a line per 20,000 "
            "images), so a corrupt file is an error before the first step; false: skip it, for data you checked"),
    Key("data.sampler", "instance", registry="samplers", listed=True, doc="instance | class_balanced | sqrt"),
    Key("data.drop_last", False, listed=True),
    Key("data.mixup", 0.0, number(0), listed=True,
        doc="Beta(a, a) of Mixup; 0: off (classification methods only: tailcon.data.mixing)"),
    Key("data.cutmix", 0.0, number(0), listed=True, doc="Beta(a, a) of CutMix; 0: off. Both on: one of the two per batch"),
    # ---- model ----
    Key("model.backbone", "resnet32", registry="backbones", listed=True),
    Key("model.classifier", "linear", choices=("linear", "cosine"), listed=True),
    Key("model.cosine_scale", 30.0, _POSITIVE, listed=True),
    Key("model.classifier_init", "torch", choices=("torch", "kaiming_normal"), listed=True,
        doc="the linear classifier's initial weights: torch (nn.Linear's own) | kaiming_normal (the LDAM-DRW "
            "CIFAR ResNet's, whose _weights_init also reaches the classifier); the cosine classifier has its own"),
    Key("model.zero_init_residual", False, listed=True),
    Key("model.pretrained", None, None, resume_safe=True, listed=True, types=(str,),
        doc="a weights file (torchvision/timm .pth or .safetensors) or tailcon run for the backbone; fresh runs "
            "only (a resumed run has the weights in its checkpoint)"),
    Key("model.require_pretrained", False,
        doc="True: refuse to train without model.pretrained (e.g. the Places-LT protocol)"),
    Key("model.sync_bn", False, doc="under torchrun: BatchNorm statistics over the global batch"),
    Key("model.bn_batch", None, integer(1), listed=True, types=(int,),
        doc="images per BatchNorm group: each device's batch normalised in groups of this size, as the authors' "
            "per-GPU batches (tailcon.models.grouped_bn); null: the whole device batch"),
    Key("model.bn_layout", "ddp", choices=("ddp", "data_parallel"), listed=True,
        doc="ddp: a group holds whole images (all views) | data_parallel: contiguous row chunks"),
    Key("model.trainable", "all", choices=("all", "last_block", "classifier"), listed=True,
        doc="which parameters train: all | last_block (the backbone's last residual block + the heads) | classifier"),
    # ---- optimisation ----
    Key("optim.name", "sgd", choices=("sgd", "adamw", "lars"), listed=True, doc="tailcon.engine.optim"),
    Key("optim.lr", 0.1, _POSITIVE, listed=True, doc="> 0: a zero learning rate trains nothing"),
    Key("optim.momentum", 0.9, number(0, 1), listed=True),
    Key("optim.nesterov", False, listed=True),
    Key("optim.weight_decay", 5e-4, number(0), listed=True),
    Key("optim.schedule", "cosine", choices=("cosine", "cosine_end", "step", "constant"), listed=True,
        doc="tailcon.engine.schedule"),
    Key("optim.warmup_epochs", 0, integer(0), listed=True),
    Key("optim.warmup_overshoot", False, listed=True,
        doc="True: the warm-up formula also sets epoch W's lr, (W+1)/W x lr, as PaCo's CIFAR code does (its `<=`)"),
    Key("optim.milestones", [160, 180], list_of(integer(0)), listed=True),
    Key("optim.gamma", 0.1, _POSITIVE, listed=True),
    Key("optim.min_lr_ratio", 0.0, number(0, 1), listed=True, doc="cosine_end: final lr = lr * min_lr_ratio"),
    Key("optim.per_iteration", False, listed=True,
        doc="True: warm-up and cosine set every step from the fractional epoch (DSCL's code)"),
    Key("optim.betas", [0.9, 0.999], list_of(number(0, 1, hi_open=True)), doc="adamw"),
    Key("optim.eps", 1.0e-8, _POSITIVE, doc="adamw"),
    Key("optim.trust_coefficient", 0.001, _POSITIVE, doc="lars: eta in eta * ||w|| / ||g + wd w||"),
    Key("optim.clip_grad_norm", None, _POSITIVE, listed=True, types=(int, float),
        doc="clip the gradients' global 2-norm to this before each step; null: off"),
    # ---- training ----
    Key("train.epochs", 200, integer(1), resume_safe=True, listed=True,
        doc="a resume may extend it; fewer than the epochs already trained is refused"),
    Key("train.amp", "auto", choices=("auto", "none", "bf16", "fp16"), listed=True,
        doc="auto (bf16 on CUDA GPUs with bf16, else none) | none | bf16 | fp16"),
    Key("train.channels_last", True, kind=PLUMBING,
        doc="NHWC convolutions: faster on GPUs with AMP and on CPUs (oneDNN). Not resume-safe: the sums round "
            "differently"),
    Key("train.compile", False, _compile_mode, PLUMBING, types=(bool, str),
        doc="torch.compile the backbone: true (default mode), or a mode: reduce-overhead (CUDA graphs; wants "
            "static batch shapes, data.drop_last=true) or max-autotune"),
    Key("train.eval_every", 1, integer(1), resume_safe=True, listed=True),
    Key("train.scale_schedule", False, None, PLUMBING, resume_safe=True,
        doc="true: a train.epochs that differs from the config file's scales warm-up, lr milestones, the method's "
            "epoch switches (e.g. DRW's drw_epoch) and eval_every by new/old epochs (round(), at least 1 where "
            "the recipe's value is), the scaled values recorded in the run's config"),
    Key("train.scaled_from", None, integer(1), PLUMBING, resume_safe=True, types=(int,),
        doc="set by tailcon: the config file's epochs that train.scale_schedule scaled from"),
    Key("train.progress", True, None, PLUMBING, resume_safe=True, doc="progress bars (also off when stdout is not a TTY)"),
    Key("train.deterministic", False, kind=PLUMBING),
    Key("train.max_steps_per_epoch", None, integer(1), types=(int,), nullable=True,
        doc="debugging / smoke tests: cut epochs short"),
    # Weights & Biases: {project: NAME, mode: online | offline | disabled, entity: TEAM}; project null: off
    Key("train.wandb.project", None, None, PLUMBING, resume_safe=True, types=(str,)),
    Key("train.wandb.mode", None, None, PLUMBING, resume_safe=True, types=(str,),
        choices=("online", "offline", "disabled")),
    Key("train.wandb.entity", None, None, PLUMBING, resume_safe=True, types=(str,)),
    Key("train.log_every", 50, integer(1), PLUMBING, resume_safe=True),
    Key("train.accumulate", 1, integer(1, 1024), listed=True,
        doc="optimise every N batches on their summed gradients (a batch N x data.batch_size where the loss is a "
            "mean over independent samples; not for contrastive or BatchNorm-coupled batches: docs/methods.md)"),
    Key("train.ema", None, number(0, 1, lo_open=True, hi_open=True), listed=True, types=(int, float),
        doc="an exponential moving average of the weights (decay, e.g. 0.999), updated after every step, "
            "evaluated beside the raw weights and saved in the checkpoints; null: off"),
    Key("train.knn_every", None, integer(1), PLUMBING, types=(int,),
        doc="every N epochs (and the last): kNN top-1 of the backbone features (k 20, cosine, weighted as "
            "solo-learn's monitor), train split against test/val; null: off"),
)

KEYS: dict[str, Key] = {k.name: k for k in SCHEMA}


def _nest(pairs) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in pairs:
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


DEFAULTS: dict[str, Any] = _nest((k.name, k.default) for k in SCHEMA)
"""Every key at its default, nested: ``DEFAULTS["optim"]["lr"] == 0.1``."""


def expected_types(key: Key) -> Optional[tuple[type, ...]]:
    """The types a value of ``key`` may have (None: any)."""
    if key.types is not None:
        return key.types
    default = key.default
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, (int, float)):
        return (int, float)
    if isinstance(default, str):
        return (str,)
    if isinstance(default, list):
        return (list, tuple)
    return None


def rule_of(name: str) -> Optional[Rule]:
    """The value rule of key ``name`` (fixed choices become ``one_of``); registry-backed rules are
    :mod:`tailcon.resolution`'s."""
    key = KEYS[name]
    if key.choices is not None:
        return one_of(key.choices)
    return key.rule


def choices(name: str) -> tuple[str, ...]:
    """The fixed values of key ``name``: ``choices("optim.schedule")``."""
    found = KEYS[name].choices
    if found is None:
        raise KeyError(f"config key {name!r} has no fixed set of values")
    return found


def keys_where(**facts: Any) -> tuple[str, ...]:
    """The names of the keys with these facts: ``keys_where(resume_safe=True)``."""
    return tuple(k.name for k in SCHEMA if all(getattr(k, f) == v for f, v in facts.items()))
