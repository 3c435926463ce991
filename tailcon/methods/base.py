"""What every method supplies to the engine, and the registry that names them.

A method is an ``nn.Module`` that owns its model parts (backbone, heads, queues), says which
augmented views it needs, and turns one batch of views into a dict of losses. The training loop
(:mod:`tailcon.engine.trainer`) is shared: adding a method never means copying it.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import nn

from ..config import ConfigError, _suggest, check_keys
from ..data.build import DataBundle
from ..data.transforms import ImageInfo, build_train_transform
from ..models import build_backbone, build_classifier

METHODS: dict[str, type["Method"]] = {}


def register(cls: type["Method"]) -> type["Method"]:
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type["Method"]:
    if name not in METHODS:
        raise ConfigError(f"unknown method.name {name!r}{_suggest(name, METHODS)}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


class Method(nn.Module):
    """Base class. Subclasses set ``name``, ``defaults`` (their ``method.*`` keys) and implement
    :meth:`training_step`; most also override :meth:`view_recipes`."""

    name: ClassVar[str] = "base"
    defaults: ClassVar[dict[str, Any]] = {}
    # Test-time prediction is the argmax of :meth:`forward`'s logits (no adjustment unless a
    # method overrides ``forward``).
    evaluates: bool = True  # False: the model cannot classify yet (a pre-training stage)
    # True when some trainable parameters get no gradient in a step (DDP must then look for them)
    has_unused_parameters: bool = False
    # submodules whose input is the same on every rank (not a data batch): model.sync_bn leaves
    # their BatchNorm local, so its statistics stay those of one process
    replicated_modules: tuple[str, ...] = ()

    @classmethod
    def stages(cls, cfg: Mapping[str, Any]) -> list[tuple[str, dict]]:
        """Several chained runs in one command: [(stage name, config overrides), ...]; each stage
        runs in RUN_DIR/<name>. Empty: one ordinary run."""
        return []

    def __init__(self, cfg: Mapping[str, Any], data: DataBundle):
        super().__init__()
        self.cfg = cfg
        self.hparams = self.validate_config(cfg.get("method", {}))
        self.num_classes = data.num_classes
        self.register_buffer("cls_num", torch.as_tensor(data.cls_num_list, dtype=torch.float64), persistent=False)
        m = cfg["model"]
        self.backbone = build_backbone(m["backbone"], bool(m.get("zero_init_residual", False)))
        self.classifier = build_classifier(m["classifier"], self.backbone.out_dim, data.num_classes,
                                           float(m.get("cosine_scale", 30.0)))

    @classmethod
    def validate_config(cls, method_cfg: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``method.*`` keys over this method's defaults; unknown keys are an error."""
        given = {k: v for k, v in method_cfg.items() if k != "name"}
        valid = [f"method.{k}" for k in cls.defaults]
        for key in given:
            if key not in cls.defaults:
                raise ConfigError(f"unknown config key 'method.{key}' for method {cls.name!r}"
                                  f"{_suggest('method.' + key, valid)}; its keys: {', '.join(valid) or '(none)'}")
        check_keys(given, cls.defaults, where="method.")  # types: "False" is not a bool
        return {**cls.defaults, **given}

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

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Hook for per-epoch schedules (curriculum weights, ...)."""

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Test-time logits [B, C]."""
        return self.classifier(self.features(images))

    def training_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Losses of one batch; key ``loss`` is what is back-propagated. No host syncs here."""
        raise NotImplementedError
