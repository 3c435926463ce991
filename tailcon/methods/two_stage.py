"""Shared mechanics of two-stage methods (SupCon, DSCL): representation learning, then a
classifier on the frozen backbone, chained in one command or run separately.

``method.stage``: ``both`` (default; runs RUN_DIR/pretrain then RUN_DIR/linear), ``pretrain``
or ``linear`` (needs ``method.init_from``, a stage-1 checkpoint).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..config import ConfigError
from ..rundir import RunDir, load_checkpoint

# method keys every two-stage method has (defaults may be overridden per method)
TWO_STAGE_DEFAULTS: dict[str, Any] = {
    "stage": "both",
    "init_from": None,
    "linear_epochs": 20,
    "linear_lr": 0.5,
    "linear_batch_size": None,  # None: data.batch_size
    "linear_schedule": "cosine",
    "linear_milestones": None,
    "linear_weight_decay": 0.0,
    "linear_sampler": "class_balanced",
    "linear_view": "crop_flip",
    "linear_bn_train": False,  # True: BN keeps batch statistics in the frozen backbone (DSCL's code)
}


def stage_plan(cfg: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[tuple[str, dict]]:
    h = {**defaults, **cfg["method"]}
    if h["stage"] != "both":
        return []
    # the classifier stage is plain SGD whatever pre-trained the backbone (LARS, AdamW)
    optim: dict[str, Any] = {"name": "sgd", "lr": h["linear_lr"], "warmup_epochs": 0, "schedule": h["linear_schedule"],
                             "weight_decay": h["linear_weight_decay"]}
    if h["linear_milestones"]:
        optim["milestones"] = list(h["linear_milestones"])
    data: dict[str, Any] = {"sampler": h["linear_sampler"]}
    stages_model: dict[str, Any] = {}
    if h["linear_batch_size"]:
        data["batch_size"] = h["linear_batch_size"]
        group = cfg["model"]["bn_batch"]
        if group:  # the same GPUs: each one's BatchNorm batch grows with the batch
            stages_model["bn_batch"] = group * int(h["linear_batch_size"]) // int(cfg["data"]["batch_size"])
    stage1 = RunDir(cfg["run_dir"]).stage("pretrain").checkpoint("last")
    linear = {"method": {"stage": "linear", "init_from": str(stage1)},
              "train": {"epochs": h["linear_epochs"]}, "optim": optim, "data": data}
    if stages_model:
        linear["model"] = stages_model
    return [("pretrain", {"method": {"stage": "pretrain"}}), ("linear", linear)]


class FrozenBackboneClassifier:
    """A classifier trained on a frozen backbone's features: cRT, and a two-stage method's linear
    stage. :meth:`frozen` says when the backbone is frozen; :meth:`keeps_bn_statistics` whether its
    BatchNorm then keeps the trained statistics (eval mode) rather than batch ones."""

    def frozen(self) -> bool:
        return True

    def keeps_bn_statistics(self) -> bool:
        return True

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen() and self.keeps_bn_statistics():
            self.backbone.eval()  # the frozen features keep the trained BatchNorm statistics
        return self

    def linear_step(self, views, labels) -> dict[str, torch.Tensor]:
        """Cross-entropy of the classifier on the frozen features of the first view."""
        with torch.no_grad():
            feats = self.backbone(views[0])
        return {"loss": torch.nn.functional.cross_entropy(self.classifier(feats), labels)}


class TwoStageMixin(FrozenBackboneClassifier):
    """For a :class:`tailcon.methods.Method` subclass with ``self.backbone`` and ``self.classifier``."""

    # a started linear stage holds stage 1's weights in its own checkpoint: the path may move
    resume_safe_keys = ("init_from",)

    @classmethod
    def stages(cls, cfg):
        return stage_plan(cfg, cls.defaults)

    @property
    def stage(self) -> str:
        return self.hparams["stage"]

    @property
    def has_unused_parameters(self) -> bool:  # pre-training leaves the classifier untouched
        return self.stage == "pretrain"

    def frozen(self) -> bool:
        return self.stage == "linear"

    def keeps_bn_statistics(self) -> bool:
        return not self.hparams["linear_bn_train"]  # True: BN keeps batch statistics (DSCL's code)

    def setup_stage(self) -> None:
        """Call at the end of ``__init__``: for ``linear``, freezes everything but the classifier."""
        self.evaluates = self.stage != "pretrain"  # stage 1 trains no classifier
        if self.stage != "linear":
            return
        if not self.hparams["init_from"]:
            raise ConfigError("method.stage=linear needs method.init_from=<stage-1 run>/last.pt")
        for name, p in self.named_parameters():
            p.requires_grad_(name.startswith("classifier."))

    def initialize(self) -> None:
        """A linear stage starting from scratch takes stage 1's weights (a resumed one, or a
        trained model being loaded, has them in its own checkpoint already)."""
        if self.stage != "linear":
            return
        state = load_checkpoint(self.hparams["init_from"], for_inference=True)["model"]
        missing = self.load_state_dict(state, strict=False).missing_keys
        if any(k.startswith("backbone.") for k in missing):
            raise ConfigError(f"{self.hparams['init_from']} has no backbone weights for this model: {missing[:3]}")
