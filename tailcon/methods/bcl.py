"""BCL: Balanced Contrastive Learning (Zhu et al., CVPR 2022, arXiv:2207.09052; FlamieZhu/Balanced-Contrastive-Learning@a56b509).

Three views per image in one forward pass (classification view + two contrastive views, so the
backbone's BatchNorm sees all 3B images together); logit-adjusted CE on the classification view
plus the balanced contrastive loss on the two contrastive views with class centres computed from
the classifier weights through a separate MLP g ("class-complement"):

    L = alpha * L_LA(logits, y) + beta * L_BCL([z1, z2], y, centres)

Defaults are the CIFAR recipe (alpha 2.0, beta 0.6, tau 0.1, MLP 64-512-128); the ImageNet-LT /
iNaturalist configs set alpha 1.0, beta 0.35, tau 0.07, 2048-2048-1024 and a cosine classifier.
"""

from __future__ import annotations

import torch

from ..config import number, one_of
from ..losses import BalancedContrastiveLoss, SupConLoss, logit_adjusted_cross_entropy
from ..models import ProjectionMLP
from .base import Method, register
from ..config import ConfigError

# contrastive view pairs by the names of the authors' README; "sim" is the method's sim_view
CL_VIEWS = {"sim-sim": ("sim", "sim"), "sim-rand": ("rand", "sim"), "rand-rand": ("rand", "rand")}


@register
class BCL(Method):
    name = "bcl"
    rules = {"alpha": number(0), "beta": number(0), "cl_views": one_of(("sim-sim", "sim-rand", "rand-rand")),
             "contrastive_loss": one_of(("balanced", "supcon"))}
    defaults = {
        "temperature": 0.1,
        "alpha": 2.0,  # weight of the logit-adjusted CE
        "beta": 0.6,  # weight of the balanced contrastive loss
        "tau_la": 1.0,  # logit-adjustment strength (training only)
        "proj_hidden": 512,
        "proj_dim": 128,
        "cls_view": "autoaug_cutout",
        "cl_views": "sim-sim",  # sim-sim | sim-rand | rand-rand
        "sim_view": "sim_cifar",
        "rand_view": "randstack",
        # supcon: BCL's "SCL" ablation, the plain SupCon loss in place of the balanced one (no class
        # centres, no class averaging), everything else unchanged (the paper's SCL ablation)
        "contrastive_loss": "balanced",
    }
    replicated_modules = ("center_head",)  # its BatchNorm batch is the C class vectors

    def __init__(self, cfg, num_classes, cls_num_list):
        super().__init__(cfg, num_classes, cls_num_list)
        h = self.hparams
        if h["cl_views"] not in CL_VIEWS:
            raise ConfigError(f"method.cl_views={h['cl_views']!r}; expected one of {', '.join(CL_VIEWS)}")
        feat = self.backbone.num_features
        self.head = ProjectionMLP(feat, int(h["proj_hidden"]), int(h["proj_dim"]), batch_norm=True)
        self.center_head = ProjectionMLP(feat, int(h["proj_hidden"]), int(h["proj_dim"]), batch_norm=True)
        tau = float(h["temperature"])
        self.contrast = SupConLoss(tau) if h["contrastive_loss"] == "supcon" else BalancedContrastiveLoss(tau)

    @property
    def has_unused_parameters(self) -> bool:  # the SCL ablation leaves the centre head idle
        return self.hparams["contrastive_loss"] == "supcon"

    def view_recipes(self):
        h = self.hparams
        pick = {"sim": h["sim_view"], "rand": h["rand_view"]}
        return (h["cls_view"], *(pick[v] for v in CL_VIEWS[h["cl_views"]]))

    def centers(self) -> torch.Tensor:
        """[C, d] unit-norm class centres from the raw classifier weight vectors (one BN batch of C)."""
        return self.center_head(self.classifier.class_vectors())

    def training_step(self, views, labels):
        b = labels.shape[0]
        feats = self.backbone(torch.cat(views, dim=0))  # one pass: BN statistics over all 3B views
        logits = self.classifier(feats[:b])
        z = self.head(feats)[b:]  # the authors run h on all views; the first B are unused
        features = torch.stack(z.split(b), dim=1)  # [B, 2, d]
        loss_ce = logit_adjusted_cross_entropy(logits, labels, self.cls_num, float(self.hparams["tau_la"]))
        if self.hparams["contrastive_loss"] == "supcon":
            loss_con = self.contrast(features, labels)
        else:
            loss_con = self.contrast(features, labels, self.centers())
        loss = float(self.hparams["alpha"]) * loss_ce + float(self.hparams["beta"]) * loss_con
        return {"loss": loss, "loss_ce": loss_ce.detach(), "loss_con": loss_con.detach()}
