"""ProCo (Du et al., TPAMI 2024, arXiv:2403.06726; LeapLabTHU/ProCo@af9e78e).

One stage, three views in one pass: view 1 -> logit-adjusted CE on the classifier; views 2 and 3
-> normalised projections whose classes are modelled by online vMF distributions; the expected
contrastive term is a CE over closed-form contrast logits. Two estimators, as the authors keep
them: ``new`` accumulates the current epoch, ``old`` (which the logits use) everything since the
start of the previous epoch; at each epoch start old <- new and new is reset. Both are float32
buffers (the authors' dtype), so checkpoints hold them and a resumed run continues exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import number
from ..losses.precision import at_least_fp32
from ..losses.proco import exact_log_ive, gather_update_batches, miller_log_ive, proco_loss, vmf_update
from ..models import ProjectionMLP
from .base import Method, register


@register
class ProCo(Method):
    name = "proco"
    defaults = {
        "temperature": 0.1,
        "alpha": 1.0,  # weight of the contrastive CE
        "proj_hidden": 512,
        "proj_dim": 128,
        "exact_bessel": False,  # True: an accurate log-Bessel (losses.exact_log_ive) instead of the authors' routine
        "cls_view": "autoaug_cutout",
        "cl_view": "sim",  # both contrastive views
    }
    rules = {"alpha": number(0)}

    def __init__(self, cfg, num_classes, cls_num_list):
        super().__init__(cfg, num_classes, cls_num_list)
        h = self.hparams
        feat, dim = self.backbone.num_features, int(h["proj_dim"])
        self.head = ProjectionMLP(feat, int(h["proj_hidden"]), dim, batch_norm=True)
        for which in ("old", "new"):
            self.register_buffer(f"{which}_ave", self.reset_means(num_classes, dim))
            self.register_buffer(f"{which}_amount", torch.zeros(num_classes))

    @staticmethod
    def reset_means(num_classes: int, dim: int) -> torch.Tensor:
        """A reset class mean: 0.9 x a random unit vector (R = 0.9), as the authors reset."""
        return 0.9 * F.normalize(torch.randn(num_classes, dim), dim=1)

    def view_recipes(self):
        return self.hparams["cls_view"], self.hparams["cl_view"], self.hparams["cl_view"]

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        # old <- new, new reset (the trainer seeds each epoch, so the reset draw is reproducible)
        self.old_ave.copy_(self.new_ave)
        self.old_amount.copy_(self.new_amount)
        self.new_ave.copy_(self.reset_means(*self.new_ave.shape).to(self.new_ave.device))
        self.new_amount.zero_()

    def training_step(self, views, labels):
        h = self.hparams
        b = labels.shape[0]
        feats = self.backbone(torch.cat(views, dim=0))  # one pass over the three views
        logits = self.classifier(feats[:b])
        # the head sees all three views, as the authors' Model.forward: its BatchNorm batch includes
        # the classification view, whose projection is then unused
        z1, z2 = at_least_fp32(self.head(feats))[b:].split(b)
        log_ive = exact_log_ive if h["exact_bessel"] else miller_log_ive
        gathered = gather_update_batches(z1, z2, labels)  # once per step, for both estimators
        loss, loss_ce, loss_scl, _, _, states = proco_loss(
            z1, z2, labels, at_least_fp32(logits), self.cls_num, self.old_ave, self.old_amount,
            temperature=float(h["temperature"]), alpha=float(h["alpha"]), log_ive=log_ive, gathered=gathered)
        with torch.no_grad():
            ave, amount = states[-1][:2]
            self.old_ave.copy_(ave)
            self.old_amount.copy_(amount)
            ave, amount = self.new_ave, self.new_amount
            for z_all in gathered[:2]:  # the new estimator sees the same two updates
                ave, amount = vmf_update(ave, amount, z_all, gathered[2])
            self.new_ave.copy_(ave)
            self.new_amount.copy_(amount)
        return {"loss": loss, "loss_ce": loss_ce.detach(), "loss_scl": loss_scl.detach()}
