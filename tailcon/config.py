"""Configuration: YAML files, ``_base_`` inheritance, dotted ``key=value`` overrides, validation.

A config is a nested dict. Every valid key has a default in :data:`DEFAULTS`, except the keys
under ``method.``, which belong to the chosen method and are validated by it
(:meth:`tailcon.methods.Method.validate_config`). A key that is not known is an error that
names it and the closest valid key, so a typo never silently trains something else.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import yaml

from . import plugins


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` / ``5e-4`` as floats (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


MAX_CONFIG_VALUES = 100_000  # a config holds a few hundred values; aliases must not expand past this


def _yaml_load(text: str) -> Any:
    """Parse YAML; a document whose aliases expand to more than :data:`MAX_CONFIG_VALUES` values
    (a "billion laughs" of nested anchors, a few hundred bytes that grow past gigabytes when
    walked) is refused before anything walks it."""
    data = yaml.load(text, Loader=_Loader)
    _check_expanded_size(data)
    return data


def _check_expanded_size(data: Any) -> None:
    stack, seen = [data], 0
    while stack:  # counts every value as often as aliases repeat it, stopping at the bound
        node = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_VALUES:
            raise ConfigError(f"the YAML expands to more than {MAX_CONFIG_VALUES} values (nested aliases?); "
                              "a config is a few hundred keys: write it without such aliases")
        if isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message names it."""


DEFAULTS: dict[str, Any] = {
    "custom_imports": [],  # modules imported first: your own methods, backbones, datasets (tailcon.plugins)
    "name": None,  # set from the config file name; used for the default run_dir
    "seed": 0,
    "run_dir": None,  # default: runs/<date>-<name>
    "resume": None,  # a run directory or checkpoint to continue from; auto: run_dir if it holds a run
    "device": "auto",  # auto | cpu | cuda | cuda:N | mps
    # the published figures this config reproduces (reproduction configs set them): shown beside tailcon's
    # in results.json, compare and report; changes nothing trained
    "paper": {"top1": None, "many": None, "medium": None, "few": None, "source": None},
    "method": {"name": "ce"},
    "data": {
        "name": "digits_lt",  # digits_lt | cifar10_lt | cifar100_lt | list | folder
        "root": None,
        "download": False,
        "imbalance_factor": 10,
        "imbalance_profile": "exp",  # exp | step
        "max_per_class": None,  # None: the dataset's own (5000 CIFAR-10, 500 CIFAR-100)
        "num_classes": None,  # list datasets: None = largest training label + 1
        "allow_empty_classes": False,  # True: classes without a training image are intended (else an error)
        "max_image_pixels": 89_478_485,  # larger images are refused, naming the file (PIL's default); None: no limit
        "subset_seed": 0,  # seed of the NumPy RNG that picks the kept images (spec 1.2)
        "train_list": None,  # list datasets: files relative to root
        "val_list": None,
        "test_list": None,
        "train_dir": "train",  # folder datasets: sub-folders of root
        "val_dir": None,
        "test_dir": "test",
        "image_size": None,  # None: dataset default (32 CIFAR, 16 digits, 224 file datasets)
        "resize_size": None,  # file datasets, test: resize short side (default image_size*256/224)
        "mean": None,  # None: dataset default
        "std": None,
        "train_augment": "crop_flip",  # see tailcon.data.transforms.RECIPES
        "batch_size": 128,  # the global batch: split over the processes under torchrun
        "eval_batch_size": 256,
        # auto: on-device batched augmentation for in-memory (CIFAR-scale) data when the method's
        # views allow it, else reference; device | reference force one (tailcon.data.loaders)
        "pipeline": "auto",
        "num_workers": 2,
        "sampler": "instance",  # instance | class_balanced | sqrt
        "drop_last": False,
        "mixup": 0.0,  # Beta(a, a) of Mixup; 0: off (classification methods only: tailcon.data.mixing)
        "cutmix": 0.0,  # Beta(a, a) of CutMix; 0: off. Both on: one of the two per batch
    },
    "model": {
        "backbone": "resnet32",
        "classifier": "linear",  # linear | cosine
        "cosine_scale": 30.0,
        "zero_init_residual": False,
        # a weights file (torchvision/timm .pth or .safetensors) or tailcon run for the backbone; fresh runs only
        "pretrained": None,
        "require_pretrained": False,  # True: refuse to train without model.pretrained (e.g. the Places-LT protocol)
        "sync_bn": False,  # under torchrun: BatchNorm statistics over the global batch
        # images per BatchNorm group: each device's batch normalised in groups of this size, as the authors'
        # per-GPU batches (tailcon.models.grouped_bn); null: the whole device batch
        "bn_batch": None,
        "bn_layout": "ddp",  # ddp: a group holds whole images (all views) | data_parallel: contiguous row chunks
        # which parameters train: all | last_block (the backbone's last residual block + the heads) | classifier
        "trainable": "all",
    },
    "optim": {
        "name": "sgd",  # sgd | adamw | lars (tailcon.engine.optim)
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 5e-4,
        "schedule": "cosine",  # cosine | cosine_end | step | constant (tailcon.engine.schedule)
        "warmup_epochs": 0,
        # True: the warm-up formula also sets epoch W's lr, (W+1)/W x lr, as PaCo's CIFAR code does (its `<=`)
        "warmup_overshoot": False,
        "milestones": [160, 180],
        "gamma": 0.1,
        "min_lr_ratio": 0.0,  # cosine_end: final lr = lr * min_lr_ratio
        "per_iteration": False,  # True: warm-up and cosine set every step from the fractional epoch (DSCL's code)
        "betas": [0.9, 0.999],  # adamw
        "eps": 1.0e-8,  # adamw
        "trust_coefficient": 0.001,  # lars: eta in eta * ||w|| / ||g + wd w||
        "clip_grad_norm": None,  # clip the gradients' global 2-norm to this before each step; null: off
    },
    "train": {
        "epochs": 200,
        "amp": "auto",  # auto (bf16 on CUDA GPUs with bf16, else none) | none | bf16 | fp16
        "channels_last": True,  # NHWC convolutions: faster on GPUs with AMP and on CPUs (oneDNN)
        # torch.compile the backbone: true (default mode), or a mode: reduce-overhead (CUDA graphs; wants static
        # batch shapes, data.drop_last=true) or max-autotune
        "compile": False,
        "eval_every": 1,
        "progress": True,  # progress bars (also off when stdout is not a TTY)
        "deterministic": False,
        "max_steps_per_epoch": None,  # debugging / smoke tests: cut epochs short
        # Weights & Biases: {project: NAME, mode: online | offline | disabled, entity: TEAM}; project null: off
        "wandb": {"project": None, "mode": None, "entity": None},
        "log_every": 50,
        # optimise every N batches on their summed gradients (a batch N x data.batch_size where the loss is a
        # mean over independent samples; not for contrastive or BatchNorm-coupled batches: docs/methods.md)
        "accumulate": 1,
        # an exponential moving average of the weights (decay, e.g. 0.999), updated after every step, evaluated
        # beside the raw weights and saved in the checkpoints; null: off
        "ema": None,
        # every N epochs (and the last): kNN top-1 of the backbone features (k 20, cosine, weighted as
        # solo-learn's monitor), train split against test/val; null: off
        "knn_every": None,
    },
}

# Keys whose default is not None but that also take null (an empty value means "off").
NULLABLE: frozenset[str] = frozenset({"data.max_image_pixels", "train.max_steps_per_epoch"})

# Values whose default is None but whose type is still known, for the type check.
_TYPES: dict[str, tuple[type, ...]] = {
    "custom_imports": (list,),
    "paper.top1": (int, float), "paper.many": (int, float), "paper.medium": (int, float), "paper.few": (int, float),
    "paper.source": (str,),
    "data.root": (str,),
    "model.pretrained": (str,),
    "train.wandb.project": (str,),
    "train.wandb.mode": (str,),
    "train.wandb.entity": (str,),
    "data.max_per_class": (int,),
    "model.bn_batch": (int,),
    "data.num_classes": (int,),
    "data.image_size": (int,),
    "data.resize_size": (int,),
    "data.mean": (list,),
    "data.std": (list,),
    "train.max_steps_per_epoch": (int,),
    "optim.clip_grad_norm": (int, float),
    "train.ema": (int, float),
    "train.knn_every": (int,),
    "train.compile": (bool, str),
    "run_dir": (str,),
    "resume": (str,),
}


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``. Lists are values, not levels."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _set(cfg: dict, dotted: str, value: Any) -> None:
    node = cfg
    parts = dotted.split(".")
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    node[parts[-1]] = value


def get(cfg: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for p in dotted.split("."):
        if not isinstance(node, Mapping) or p not in node:
            return default
        node = node[p]
    return node


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins. Neither input is modified."""
    out = copy.deepcopy(dict(base))
    for k, v in update.items():
        if v is None and isinstance(out.get(k), Mapping):
            continue  # an empty section (`optim:` with nothing under it) keeps its keys
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_value(text: str) -> Any:
    """Parse the right-hand side of ``key=value`` as YAML (``0.05``, ``true``, ``[160, 180]``)."""
    if text == "":
        return None
    try:
        return _yaml_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.lr=0.05)")
        key, _, value = item.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        _set(out, key, parse_value(value))
    return out


def load_yaml(path: str | os.PathLike, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a YAML config, following ``_base_`` (a path relative to the file) recursively."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if str(path.resolve()) in _seen:
        raise ConfigError(f"config {path}: circular _base_ chain {' -> '.join(_seen)}")
    try:
        data = _yaml_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path}: invalid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path}: not UTF-8 text ({e})") from None
    except ConfigError as e:
        raise ConfigError(f"config {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: the top level must be a mapping, got {type(data).__name__}")
    base = data.pop("_base_", None)
    if base is not None:
        # a path relative to this file first, then a shipped config's name (pip users cannot know where
        # site-packages is): `_base_: cifar10_lt/bcl`
        parent = load_yaml(base_path(path, base), _seen + (str(path.resolve()),))
        child_method = (data.get("method") or {}).get("name")
        if child_method is not None and child_method != (parent.get("method") or {}).get("name"):
            parent = {k: v for k, v in parent.items() if k != "method"}  # its keys belong to the other method
        data = merge(parent, data)
    return data


def base_path(path: Path, base: Any) -> Path:
    """The file a config's ``_base_`` names: a path relative to the config first, then a shipped
    config's name (pip users cannot know where site-packages is): ``_base_: cifar10_lt/bcl``."""
    relative = path.parent / str(base)
    if relative.is_file():
        return relative
    try:
        return locate(str(base))
    except ConfigError:
        raise ConfigError(f"config {path}: _base_ {base!r} is neither a file next to it ({relative}) nor a "
                          f"shipped config{suggest(str(base), shipped_config_names())}") from None


def suggest(key: str, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``valid`` to ``key``, or "" (a right leaf under a
    wrong section, ``lr`` for ``optim.lr``, is found too). Shared by every did-you-mean message."""
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    if not close:  # a right leaf under a wrong section, e.g. "lr" for "optim.lr"
        leaf = key.rsplit(".", 1)[-1]
        close = [v for v in valid if v.rsplit(".", 1)[-1] == leaf][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_keys(cfg: Mapping[str, Any], defaults: Mapping[str, Any], where: str = "") -> None:
    """Raise :class:`ConfigError` for a key of ``cfg`` that has no default, or a value of the
    wrong type (a string for a number or a bool: ``"False"`` must never mean True)."""
    valid = flatten(defaults)
    sections = {k.rsplit(".", i)[0] for k in valid for i in range(1, k.count(".") + 1)}
    for key, value in flatten(cfg).items():
        if key in valid:
            _check_type(key, value, valid[key], where)
        elif key in sections and value in ({}, None):
            continue
        elif not key.startswith("method."):
            raise ConfigError(f"unknown config key '{where}{key}'{suggest(key, valid)}")


def _check_type(key: str, value: Any, default: Any, where: str) -> None:
    if value is None:
        if default is not None and f"{where}{key}" not in NULLABLE:  # `optim.lr=` or `lr:` with nothing after it
            raise ConfigError(f"config key '{where}{key}' has an empty value; it needs one (default: "
                              f"{key.rsplit('.', 1)[-1]}: {default!r})")
        return
    expected: tuple[type, ...]
    if key in _TYPES:  # a key with its own type list wins over its default's type
        expected = _TYPES[key]
    elif isinstance(default, bool):
        expected = (bool,)
    elif isinstance(default, (int, float)):
        expected = (int, float)
    elif isinstance(default, str):
        expected = (str,)
    elif isinstance(default, list):
        expected = (list, tuple)
    else:
        return
    ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
    if not ok:
        names = "/".join(t.__name__ for t in expected)
        raise ConfigError(f"config key '{where}{key}' must be {names}, got {value!r} ({type(value).__name__})")


# ---- values: ranges and enumerations, checked when a config is resolved (before any work) -------
Rule = Callable[[Any], Optional[str]]  # returns what was expected when ``value`` is wrong, else None


def integer(lo: Optional[int] = None, hi: Optional[int] = None) -> Rule:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo) or (hi is not None and v > hi):
            bounds = [f">= {lo}" if lo is not None else "", f"<= {hi}" if hi is not None else ""]
            return "an integer " + " and ".join(b for b in bounds if b) if any(bounds) else "an integer"
        return None
    return check


# Every number in a config, whatever its key, is finite and of a magnitude some computation can
# take: 1e300 passes as a float but overflows float32 in the optimiser, far from the config.
MAX_MAGNITUDE = {float: 1e6, int: 2**53}


def _number_in_bounds(v: Any) -> Optional[str]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return "a finite number"
    bound = MAX_MAGNITUDE[float if isinstance(v, float) else int]
    return None if abs(v) <= bound else f"a number between -{bound:g} and {bound:g}"


def number(lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False,
           hi_open: bool = False) -> Rule:
    def check(v):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or (v < hi if hi_open else v <= hi))
        if ok:
            return None
        bounds = [f"{'>' if lo_open else '>='} {lo}" if lo is not None else "",
                  f"{'<' if hi_open else '<='} {hi}" if hi is not None else ""]
        return "a number " + " and ".join(b for b in bounds if b) if any(bounds) else "a number"
    return check


def one_of(choices: Iterable[str] | Callable[[], Iterable[str]]) -> Rule:
    """``choices``: the values, or a function returning them (looked up when checked)."""
    def check(v):
        valid = list(choices() if callable(choices) else choices)
        return None if v in valid else f"one of {', '.join(map(str, valid))}{suggest(str(v), valid)}"
    return check


def list_of(rule: Rule) -> Rule:
    def check(v):
        if not isinstance(v, (list, tuple)):
            return "a list"
        bad = [x for x in v if rule(x)]
        return f"a list of {rule(bad[0])}" if bad else None
    return check


def _device(v):
    return None if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(v)) else "auto, cpu, cuda, cuda:N or mps"


def _backbone(v):
    from .models import check_backbone  # timm names are looked up in timm, only when one is given

    return check_backbone(v)


def _lazy(module: str, name: str) -> Callable[[], Iterable[str]]:
    def get_names():
        import importlib

        return getattr(importlib.import_module(module, __package__), name)
    return get_names


VALUE_RULES: dict[str, Rule] = {
    "custom_imports": lambda v: None if isinstance(v, list) and all(
        isinstance(m, str) and plugins.MODULE_NAME.fullmatch(m) for m in v) else "a list of module names",
    "seed": integer(0, 2**32 - 1),
    **{f"paper.{g}": number(0, 100) for g in ("top1", "many", "medium", "few")},
    "device": _device,
    "data.name": one_of(_lazy(".data.build", "DATASETS")),
    "data.imbalance_factor": number(1),
    "data.imbalance_profile": one_of(("exp", "step")),
    "data.max_per_class": integer(1),
    "data.num_classes": integer(1, 1_000_000),
    "data.max_image_pixels": integer(1),
    "data.subset_seed": integer(0, 2**32 - 1),
    "data.image_size": integer(1),
    "data.resize_size": integer(1),
    "data.mean": list_of(number()),
    "data.std": list_of(number(0, lo_open=True)),
    "data.train_augment": one_of(_lazy(".data.transforms", "RECIPES")),
    "data.batch_size": integer(1),
    "data.eval_batch_size": integer(1),
    "data.pipeline": one_of(("auto", "device", "reference")),
    "data.num_workers": integer(0),
    "data.mixup": number(0),
    "data.cutmix": number(0),
    "data.sampler": one_of(_lazy(".data.samplers", "SAMPLERS")),
    "model.backbone": lambda v: _backbone(v),
    "model.classifier": one_of(("linear", "cosine")),
    "model.cosine_scale": number(0, lo_open=True),
    "model.bn_batch": integer(1),
    "model.bn_layout": one_of(("ddp", "data_parallel")),
    "model.trainable": one_of(("all", "last_block", "classifier")),
    "optim.name": one_of(("sgd", "adamw", "lars")),
    "train.wandb.mode": one_of(("online", "offline", "disabled")),  # None (W&B's default) is always allowed
    "optim.betas": list_of(number(0, 1, hi_open=True)),
    "optim.eps": number(0, lo_open=True),
    "optim.trust_coefficient": number(0, lo_open=True),
    "optim.lr": number(0),
    "optim.momentum": number(0, 1),
    "optim.weight_decay": number(0),
    "optim.schedule": one_of(_lazy(".engine.schedule", "SCHEDULES")),
    "optim.warmup_epochs": integer(0),
    "optim.milestones": list_of(integer(0)),
    "optim.gamma": number(0, lo_open=True),
    "optim.min_lr_ratio": number(0, 1),
    "train.epochs": integer(1),
    "train.compile": lambda v: None if v in (True, False, "default", "reduce-overhead", "max-autotune")
    else "true, false, default, reduce-overhead or max-autotune",
    "train.amp": one_of(("auto", "none", "bf16", "fp16")),
    "train.eval_every": integer(1),
    "train.max_steps_per_epoch": integer(1),
    "train.log_every": integer(1),
    "train.accumulate": integer(1, 1024),
    "train.ema": number(0, 1, lo_open=True, hi_open=True),
    "train.knn_every": integer(1),
    "optim.clip_grad_norm": number(0, lo_open=True),
}


def check_values(cfg: Mapping[str, Any], rules: Mapping[str, Rule], where: str = "") -> None:
    """Raise :class:`ConfigError` naming the first key whose value breaks its rule (None is
    always allowed: it means "the default" or "off")."""
    for key, value in flatten(cfg).items():
        rule = rules.get(key)
        expected = rule(value) if rule is not None and value is not None else None
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            expected = expected or _number_in_bounds(item)
        if expected:
            raise ConfigError(f"config key '{where}{key}' must be {expected}, got {value!r}")


def check_world_size(cfg: Mapping[str, Any], world_size: int) -> None:
    """Under torchrun the global batch is split evenly over the processes, and each process's
    share into whole BatchNorm groups (``model.bn_batch``)."""
    batch = int(cfg["data"]["batch_size"])
    if world_size > 1 and batch % world_size:
        raise ConfigError(f"data.batch_size={batch} is the global batch; it must be divisible "
                          f"by the number of processes ({world_size})")
    group = cfg["model"]["bn_batch"]
    if group is not None:
        if cfg["model"]["sync_bn"]:
            raise ConfigError("model.bn_batch (BatchNorm over groups of a device's batch) and model.sync_bn=true "
                              "(over the global batch) exclude each other: set one")
        per_device = batch // world_size
        if per_device > group and per_device % group:
            raise ConfigError(f"model.bn_batch={group} must divide each process's batch ({per_device} = "
                              f"data.batch_size {batch} / {world_size} processes)")


def config_name(path: str | os.PathLike) -> str:
    """``configs/cifar10_lt/bcl.yaml`` -> ``cifar10_lt-bcl``."""
    p = Path(path)
    return f"{p.parent.name}-{p.stem}" if p.parent.name not in ("", ".", "configs") else p.stem


def shipped_config_dir() -> Path:
    """The configs installed with tailcon: ``<dataset>/<method>.yaml``."""
    return Path(__file__).resolve().parent / "configs"


def shipped_config_names() -> list[str]:
    root = shipped_config_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def locate(path: str | os.PathLike) -> Path:
    """A config file: ``path`` itself when it exists, else the shipped config of that name
    (``cifar10_lt/bcl``, ``cifar10_lt/bcl.yaml`` or ``configs/cifar10_lt/bcl.yaml`` from any
    directory)."""
    p = Path(path)
    if p.is_file():
        return p
    name = p.as_posix()
    name = name[:-5] if name.endswith(".yaml") else name
    name = name[len("configs/"):] if name.startswith("configs/") else name
    shipped = shipped_config_dir() / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"config file not found: {path} (nor a shipped config named {name!r}"
                      f"{suggest(name, shipped_config_names())}; `tailcon configs` lists them)")


def resolve(path: str | os.PathLike | None, overrides: Iterable[str] = (), *,
            extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults <- config file (with ``_base_``) <- ``extra`` <- ``key=value`` overrides.

    Method keys are validated later by the method, which knows them.
    """
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = locate(path)
        file_cfg = load_yaml(path)
        check_keys(file_cfg, DEFAULTS, where="")
        cfg = merge(cfg, file_cfg)
        if not file_cfg.get("name"):
            cfg["name"] = config_name(path)
    if extra:
        cfg = merge(cfg, extra)
    over = parse_overrides(overrides)
    check_keys(over, DEFAULTS)
    new_method = get(over, "method.name")
    if new_method is not None and new_method != get(cfg, "method.name"):
        cfg["method"] = {}  # the file's method keys belong to the method it named
    cfg = merge(cfg, over)
    if not cfg["name"]:
        cfg["name"] = "run"
    plugins.load_entry_points()
    plugins.import_modules(cfg["custom_imports"], next_to=Path(path).resolve().parent if path is not None else None)
    return validate(cfg)


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check every value against :data:`VALUE_RULES` and the method's own keys and ranges, and
    fill ``cfg["method"]`` with the method's defaults (what ``config.yaml`` holds). Idempotent."""
    check_values(cfg, VALUE_RULES)
    for key in ("mean", "std"):  # images are always read as RGB
        value = cfg["data"][key]
        if value is not None and len(value) != 3:
            raise ConfigError(f"config key 'data.{key}' must have 3 values, one per RGB channel, got {value!r}")
    check_world_size(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    from .methods import get_method  # the registry knows each method's keys

    method = get_method(cfg["method"]["name"])
    cfg["method"] = {"name": method.name, **method.validate_config(cfg["method"])}
    if (cfg["data"]["mixup"] or cfg["data"]["cutmix"]) and not method.soft_targets:
        raise ConfigError(f"data.mixup / data.cutmix need a loss that takes soft targets (ce, logit_adjusted, "
                          f"balanced_softmax, class_balanced, ldam_drw); method {method.name!r} contrasts its batch")
    return cfg


def complete(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config (a run's, a checkpoint's), with the keys added since at their defaults; the
    run's ``custom_imports`` are imported from ``sys.path`` (never from the run directory), so its
    method, backbone and dataset are known again."""
    out = merge(DEFAULTS, cfg)
    plugins.load_entry_points()
    plugins.import_modules(out["custom_imports"], announce=True)
    return out


def dump(cfg: Mapping[str, Any]) -> str:
    return yaml.safe_dump(plain(cfg), sort_keys=False)


def plain(obj: Any) -> Any:
    """Plain YAML/JSON types: mappings as dicts, tuples as lists."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


_suggest = suggest  # the name before it was public
