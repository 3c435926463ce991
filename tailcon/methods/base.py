"""What every method supplies to the engine, and the registry that names them.

A method is an ``nn.Module`` that owns its model parts (backbone, heads, queues), says which
augmented views it needs, and turns one batch of views into a dict of losses. The training loop
(:mod:`tailcon.engine.trainer`) is shared: adding a method never means copying it.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import nn

from ..config import (ConfigError, Rule, check_keys, check_values, integer, list_of, number, one_of, rule_of,
                      suggest)
from ..data.samplers import SAMPLERS
from ..data.transforms import RECIPES, ImageInfo, build_train_transform
from ..memory import MomentumEncoder
from ..models import build_backbone, build_classifier, load_pretrained

METHODS: dict[str, type["Method"]] = {}


def register(cls: type["Method"]) -> type["Method"]:
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type["Method"]:
    if name not in METHODS:
        raise ConfigError(f"unknown method.name {name!r}{suggest(name, METHODS)}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


# Ranges of the method keys, by name: a name means the same thing in every method that has it
# (a method whose key of the same name means something else overrides it in ``rules``).
COMMON_RULES: dict[str, Rule] = {
    "temperature": number(0, lo_open=True), "base_temperature": number(0, lo_open=True),
    "con_weight": number(0), "ce_weight": number(0), "pbsd_weight": number(0),
    "tau": number(0), "tau_la": number(0), "ce_tau": number(0), "label_smoothing": number(0, 1, hi_open=True),
    "momentum": number(0, 1), "proj_dim": integer(1), "proj_hidden": integer(1),
    "epoch_offset": integer(0), "linear_epochs": integer(1), "linear_lr": number(0),
    "linear_batch_size": integer(1), "linear_weight_decay": number(0), "linear_sampler": one_of(SAMPLERS),
    "linear_milestones": list_of(integer(0)), "linear_schedule": rule_of("optim.schedule"),
    "stage": one_of(("both", "pretrain", "linear")),
    "view": one_of(RECIPES), "linear_view": one_of(RECIPES), "feature_view": one_of(RECIPES),
    "ce_view": one_of(RECIPES), "cls_view": one_of(RECIPES), "sim_view": one_of(RECIPES),
    "rand_view": one_of(RECIPES), "ce_sampler": one_of(SAMPLERS),
}


def build_method(cfg: Mapping[str, Any], num_classes: int, cls_num_list: Sequence[int],
                 load_pretrained: bool = False) -> "Method":
    """The method ``cfg["method"]["name"]`` for ``num_classes`` classes with these training counts.
    ``load_pretrained``: start the backbone from ``model.pretrained`` (a fresh training run; a
    checkpoint being loaded has its own weights)."""
    method = get_method(cfg["method"]["name"])(cfg, num_classes, cls_num_list)
    if load_pretrained and cfg["model"]["pretrained"]:
        method.start_from_pretrained(cfg["model"]["pretrained"])
    return method


class Method(nn.Module):
    """Base class. Subclasses set ``name``, ``defaults`` (their ``method.*`` keys) and implement
    :meth:`training_step`; most also override :meth:`view_recipes`."""

    name: ClassVar[str] = "base"
    defaults: ClassVar[dict[str, Any]] = {}
    rules: ClassVar[dict[str, Rule]] = {}  # ranges of this method's own keys (over COMMON_RULES)
    # Test-time prediction is the argmax of :meth:`forward`'s logits (no adjustment unless a
    # method overrides ``forward``).
    evaluates: bool = True  # False: the model cannot classify yet (a pre-training stage)
    # True: the loss takes soft targets (data.mixup / data.cutmix); contrastive batches do not
    soft_targets: ClassVar[bool] = False
    # True when some trainable parameters get no gradient in a step (DDP must then look for them)
    has_unused_parameters: bool = False
    # method keys a resumed run may change (besides the schema's resume-safe keys): none of them can
    # change what was computed so far
    resume_safe_keys: ClassVar[tuple[str, ...]] = ()
    # method keys counted in epochs of this run (a schedule switch): train.scale_schedule scales
    # them with train.epochs, and one at or past the run's end is warned about
    epoch_keys: ClassVar[tuple[str, ...]] = ()
    # submodules whose input is the same on every rank (not a data batch): model.sync_bn leaves
    # their BatchNorm local, so its statistics stay those of one process
    replicated_modules: tuple[str, ...] = ()

    @classmethod
    def stages(cls, cfg: Mapping[str, Any]) -> list[tuple[str, dict]]:
        """Several chained runs in one command: [(stage name, config overrides), ...]; each stage
        runs in RUN_DIR/<name>. Empty: one ordinary run."""
        return []

    def __init__(self, cfg: Mapping[str, Any], num_classes: int, cls_num_list: Sequence[int]):
        """``cfg``: a resolved config; ``cls_num_list``: training images per class (the prior
        that logit adjustment, class-balanced weights and queues need)."""
        super().__init__()
        self.cfg = cfg
        self.hparams = self.validate_config(cfg["method"])
        self.num_classes = int(num_classes)
        self.register_buffer("cls_num", torch.as_tensor(list(cls_num_list), dtype=torch.float64), persistent=False)
        m = cfg["model"]
        self.backbone = build_backbone(m["backbone"], bool(m["zero_init_residual"]))
        self.classifier = build_classifier(m["classifier"], self.backbone.num_features, self.num_classes,
                                           float(m["cosine_scale"]), m["classifier_init"])

    def start_from_pretrained(self, path: str) -> None:
        """Load the weights file or run ``path`` into the backbone; momentum key encoders, which
        copied the backbone when they were built, copy it again (as if built after loading)."""
        load_pretrained(self.backbone, path)
        for module in self.modules():
            if isinstance(module, MomentumEncoder):
                module.copy_online()

    @classmethod
    def validate_config(cls, method_cfg: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``method.*`` keys over this method's defaults; unknown keys are an error."""
        given = {k: v for k, v in method_cfg.items() if k != "name"}
        valid = [f"method.{k}" for k in cls.defaults]
        for key in given:
            if key not in cls.defaults:
                raise ConfigError(f"unknown config key 'method.{key}' for method {cls.name!r}"
                                  f"{suggest('method.' + key, valid)}; its keys: {', '.join(valid) or '(none)'}")
        check_keys(given, cls.defaults, where="method.")  # types: "False" is not a bool
        hparams = {**cls.defaults, **given}
        check_values(hparams, {**COMMON_RULES, **cls.rules}, where="method.")
        return hparams

    # ---- what the engine asks -------------------------------------------------------------
    def view_recipes(self) -> Sequence[str]:
        """Augmentation recipe of each view (tailcon.data.transforms.RECIPES)."""
        return (self.cfg["data"]["train_augment"],)

    def train_transform(self, info: ImageInfo) -> Callable:
        """The per-image training transform; by default one view per recipe."""
        return build_train_transform(self.view_recipes(), info)

    def paired_batch(self) -> tuple[str, Sequence[str]] | None:
        """A second batch drawn by another sampler each step, as (sampler, view recipes), passed to
        :meth:`training_step` as ``paired=(views, labels)`` (Hybrid's class-balanced CE batch)."""
        return None

    def initialize(self) -> None:
        """Called once when a run starts from scratch (not when resuming or loading a
        checkpoint): load weights the method starts from (a two-stage method's stage 1)."""

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Hook for per-epoch schedules (curriculum weights, ...)."""

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def logits_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Test-time logits [B, C] and the backbone features [B, D] they come from, in one pass."""
        feats = self.features(images)
        return self.classifier(feats), feats

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Test-time logits [B, C]."""
        return self.logits_and_features(images)[0]

    def training_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Losses of one batch; key ``loss`` is what is back-propagated. No host syncs here."""
        raise NotImplementedError
