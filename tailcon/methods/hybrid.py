"""Hybrid-SC and Hybrid-PSC (Wang et al., CVPR 2021, arXiv:2103.14267; no code was released).

Two branches on one backbone: a feature-learning branch (projection MLP + SupCon "SC" or the
prototypical "PSC" loss) on an instance-balanced batch with two views, and a linear classifier
trained with CE on a separate class-balanced batch. A curriculum moves the weight from features
to classifier:  L = alpha(T) * L_feat + (1 - alpha(T)) * L_CE,  alpha(T) = 1 - (T / T_max)^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import PrototypicalSupConLoss, SupConLoss
from ..models import ProjectionMLP
from .base import Method, register


class _Hybrid(Method):
    epoch_keys = ("epoch_offset",)
    defaults = {
        "temperature": 0.1,
        "proj_hidden": None,  # None: the backbone's feature dim (SupCon-style head) [ASSUME]
        "proj_dim": 128,  # [ASSUME]
        "feature_view": "crop_flip_gray",
        "ce_view": "crop_flip_gray",
        "ce_sampler": "class_balanced",  # the CE branch's own batch [PAPER-r]; "instance" also works
        "epoch_offset": 0,  # alpha uses T = epoch + offset; 0: alpha starts at exactly 1 [ASSUME]
        "separate_forward": False,  # True: the contrastive and the CE batch in two backbone passes (two BN batches)
    }

    def __init__(self, cfg, num_classes, cls_num_list):
        super().__init__(cfg, num_classes, cls_num_list)
        feat = self.backbone.num_features
        h = self.hparams
        self.head = ProjectionMLP(feat, int(h["proj_hidden"] or feat), int(h["proj_dim"]), batch_norm=False)
        self.register_buffer("alpha", torch.ones(()), persistent=False)

    def view_recipes(self):
        return (self.hparams["feature_view"],) * 2

    def paired_batch(self):
        """The CE branch draws its own batch: (sampler, view recipes)."""
        return self.hparams["ce_sampler"], (self.hparams["ce_view"],)

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        t = epoch + int(self.hparams["epoch_offset"])
        self.alpha.fill_(max(0.0, 1.0 - (t / num_epochs) ** 2))

    def feature_loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, views, labels, paired=None):
        if paired is None:
            raise RuntimeError(f"{self.name} needs the class-balanced CE batch (paired loader)")
        ce_views, ce_labels = paired
        b = labels.shape[0]
        if self.hparams["separate_forward"]:
            feats = torch.cat([self.backbone(torch.cat(views, dim=0)), self.backbone(torch.cat(ce_views, dim=0))])
        else:
            feats = self.backbone(torch.cat([*views, *ce_views], dim=0))
        z = self.head(feats[: 2 * b])
        loss_feat = self.feature_loss(torch.stack(z.split(b), dim=1), labels)
        loss_ce = F.cross_entropy(self.classifier(feats[2 * b:]), ce_labels)
        loss = self.alpha * loss_feat + (1 - self.alpha) * loss_ce
        return {"loss": loss, "loss_feat": loss_feat.detach(), "loss_ce": loss_ce.detach(), "alpha": self.alpha}


@register
class HybridSC(_Hybrid):
    name = "hybrid_sc"

    def __init__(self, cfg, num_classes, cls_num_list):
        super().__init__(cfg, num_classes, cls_num_list)
        self.supcon_loss = SupConLoss(float(self.hparams["temperature"]))

    def feature_loss(self, features, labels):
        return self.supcon_loss(features, labels)


@register
class HybridPSC(_Hybrid):
    name = "hybrid_psc"
    defaults = {**_Hybrid.defaults, "include_positive_in_denominator": False}

    def __init__(self, cfg, num_classes, cls_num_list):
        super().__init__(cfg, num_classes, cls_num_list)
        # learnable prototypes, N(0, 1) then normalised; re-normalised at every use [ASSUME]
        self.prototypes = nn.Parameter(F.normalize(torch.randn(self.num_classes, int(self.hparams["proj_dim"])), dim=1))
        self.psc_loss = PrototypicalSupConLoss(float(self.hparams["temperature"]),
                                               bool(self.hparams["include_positive_in_denominator"]))

    def feature_loss(self, features, labels):
        return self.psc_loss(features, labels, F.normalize(self.prototypes, dim=1))
