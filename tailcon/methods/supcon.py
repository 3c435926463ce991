"""SupCon baselines (Khosla et al., NeurIPS 2020, arXiv:2004.11362) in the two forms users know.

``supcon`` (two-stage): stage ``pretrain`` trains backbone + projection head with the SupCon
loss only; stage ``linear`` freezes the backbone (BatchNorm statistics included), drops the head
and trains the classifier with CE, by default on class-balanced batches. ``method.stage=both``
(the default) chains the two stages in one command, in ``RUN_DIR/pretrain`` and
``RUN_DIR/linear`` (see :mod:`tailcon.methods.two_stage`).

``supcon_joint`` (one-stage): SupCon on two views + CE on the first view's features, jointly.
"""

from __future__ import annotations

import torch

from ..losses import SupConLoss, logit_adjusted_cross_entropy
from ..models import ProjectionMLP
from .base import Method, register
from .two_stage import TWO_STAGE_DEFAULTS, TwoStageMixin


class _SupConBase(Method):
    def __init__(self, cfg, num_classes, cls_num_list):
        super().__init__(cfg, num_classes, cls_num_list)
        feat = self.backbone.num_features
        h = self.hparams
        self.head = ProjectionMLP(feat, int(h["proj_hidden"] or feat), int(h["proj_dim"]), batch_norm=False)
        self.supcon_loss = SupConLoss(float(h["temperature"]), h["base_temperature"])

    def contrastive(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        b = labels.shape[0]
        z = self.head(feats)
        return self.supcon_loss(torch.stack(z.split(b), dim=1), labels)


_COMMON = {"temperature": 0.1, "base_temperature": None, "proj_hidden": None, "proj_dim": 128, "view": "supcon_cifar"}


@register
class SupCon(TwoStageMixin, _SupConBase):
    name = "supcon"
    defaults = {**_COMMON, **TWO_STAGE_DEFAULTS}

    def __init__(self, cfg, num_classes, cls_num_list):
        super().__init__(cfg, num_classes, cls_num_list)
        self.setup_stage()

    def view_recipes(self):
        return (self.hparams["linear_view"],) if self.stage == "linear" else (self.hparams["view"],) * 2

    def training_step(self, views, labels):
        if self.stage == "linear":
            return self.linear_step(views, labels)
        return {"loss": self.contrastive(self.backbone(torch.cat(views, dim=0)), labels)}


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
