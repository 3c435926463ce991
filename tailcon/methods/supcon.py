"""SupCon baselines (Khosla et al. 2020, spec section 2) in the two forms users know.

``supcon`` (two-stage): stage ``pretrain`` trains backbone + projection head with the SupCon
loss only; stage ``linear`` freezes the backbone (BatchNorm statistics included), drops the head
and trains the classifier with CE, by default on class-balanced batches. ``method.stage=both``
(the default) chains the two stages in one command, in ``RUN_DIR/pretrain`` and
``RUN_DIR/linear``.

``supcon_joint`` (one-stage): SupCon on two views + CE on the first view's features, jointly.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..losses import logit_adjusted_cross_entropy, supcon_loss
from ..models import ProjectionMLP
from .base import Method, register


class _SupConBase(Method):
    def __init__(self, cfg, data):
        super().__init__(cfg, data)
        feat = self.backbone.out_dim
        h = self.hparams
        self.head = ProjectionMLP(feat, int(h["proj_hidden"] or feat), int(h["proj_dim"]), batch_norm=False)

    def contrastive(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        b = labels.shape[0]
        z = self.head(feats)
        return supcon_loss(torch.stack(z.split(b), dim=1), labels, float(self.hparams["temperature"]),
                           self.hparams["base_temperature"])


_COMMON = {"temperature": 0.1, "base_temperature": None, "proj_hidden": None, "proj_dim": 128, "view": "supcon_cifar"}


@register
class SupCon(_SupConBase):
    name = "supcon"
    defaults = {**_COMMON, "stage": "both",  # both | pretrain | linear
                "linear_epochs": 20, "linear_lr": 0.5, "linear_sampler": "class_balanced",
                "linear_view": "crop_flip", "init_from": None}

    @classmethod
    def stages(cls, cfg: Mapping[str, Any]) -> list[tuple[str, dict]]:
        h = cfg["method"]
        if h.get("stage", "both") != "both":
            return []
        linear = {"method": {"stage": "linear", "init_from": os.path.join(cfg["run_dir"], "pretrain", "last.pt")},
                  "train": {"epochs": h.get("linear_epochs", cls.defaults["linear_epochs"])},
                  "optim": {"lr": h.get("linear_lr", cls.defaults["linear_lr"]), "warmup_epochs": 0,
                            "schedule": "cosine", "weight_decay": 0.0},
                  "data": {"sampler": h.get("linear_sampler", cls.defaults["linear_sampler"])}}
        return [("pretrain", {"method": {"stage": "pretrain"}}), ("linear", linear)]

    def __init__(self, cfg, data):
        super().__init__(cfg, data)
        stage = self.hparams["stage"]
        if stage not in ("both", "pretrain", "linear"):
            raise ValueError(f"method.stage={stage!r}; expected both, pretrain or linear")
        self.evaluates = stage != "pretrain"  # a pre-training stage has no trained classifier
        if stage == "linear":
            if not self.hparams["init_from"]:
                raise ValueError("method.stage=linear needs method.init_from=<pretrain run>/last.pt")
            from ..engine.checkpoint import load_checkpoint

            self.load_state_dict(load_checkpoint(self.hparams["init_from"])["model"])
            for p in self.backbone.parameters():
                p.requires_grad_(False)
            for p in self.head.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.hparams["stage"] == "linear":
            self.backbone.eval()  # frozen features: BN statistics stay those of pre-training
        return self

    def view_recipes(self):
        if self.hparams["stage"] == "linear":
            return (self.hparams["linear_view"],)
        return (self.hparams["view"],) * 2

    def training_step(self, views, labels):
        if self.hparams["stage"] == "linear":
            with torch.no_grad():
                feats = self.backbone(views[0])
            return {"loss": F.cross_entropy(self.classifier(feats), labels)}
        loss = self.contrastive(self.backbone(torch.cat(views, dim=0)), labels)
        return {"loss": loss}


@register
class SupConJoint(_SupConBase):
    name = "supcon_joint"
    defaults = {**_COMMON, "con_weight": 1.0, "ce_weight": 1.0, "ce_tau": 0.0}  # ce_tau > 0: logit-adjusted CE

    def view_recipes(self):
        return (self.hparams["view"],) * 2

    def training_step(self, views, labels):
        b = labels.shape[0]
        feats = self.backbone(torch.cat(views, dim=0))
        loss_con = self.contrastive(feats, labels)
        loss_ce = logit_adjusted_cross_entropy(self.classifier(feats[:b]), labels, self.cls_num,
                                               float(self.hparams["ce_tau"]))
        loss = float(self.hparams["con_weight"]) * loss_con + float(self.hparams["ce_weight"]) * loss_ce
        return {"loss": loss, "loss_con": loss_con.detach(), "loss_ce": loss_ce.detach()}
