"""A method of your own on top of tailcon: SupCon whose anchors are weighted by the inverse
frequency of their class, so each class counts the same in the contrastive term, plus a
cross-entropy head. Loaded with ``custom_imports: [balanced_supcon]`` (docs/extending.md)."""

import torch
import torch.nn.functional as F

from tailcon.config import number
from tailcon.losses import logit_adjusted_cross_entropy
from tailcon.methods import Method, register
from tailcon.models import ProjectionMLP


@register
class BalancedSupCon(Method):
    name = "balanced_supcon"
    defaults = {"temperature": 0.1, "proj_dim": 128, "ce_weight": 1.0, "view": "supcon_cifar"}
    rules = {"ce_weight": number(0)}  # temperature and proj_dim: tailcon's rules for those names

    def __init__(self, cfg, num_classes, cls_num_list):
        super().__init__(cfg, num_classes, cls_num_list)
        feat = self.backbone.num_features
        self.head = ProjectionMLP(feat, feat, int(self.hparams["proj_dim"]))

    def view_recipes(self):
        return (self.hparams["view"],) * 2

    def training_step(self, views, labels):
        b = labels.shape[0]
        feats = self.backbone(torch.cat(views))
        z = self.head(feats)  # [2B, D], unit norm
        y = labels.repeat(2)
        sim = z @ z.t() / float(self.hparams["temperature"])
        self_mask = torch.eye(2 * b, dtype=torch.bool, device=z.device)
        log_prob = sim - torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
        pos = (y[:, None] == y[None, :]) & ~self_mask
        per_anchor = -(log_prob * pos).sum(1) / pos.sum(1).clamp_min(1)
        weight = 1.0 / self.cls_num.to(z.dtype)[y]  # each class weighs the same, whatever its size
        loss_con = (weight * per_anchor).sum() / weight.sum()
        loss_ce = logit_adjusted_cross_entropy(self.classifier(feats[:b]), labels, self.cls_num, 1.0)
        loss = loss_con + float(self.hparams["ce_weight"]) * loss_ce
        return {"loss": loss, "loss_con": loss_con.detach(), "loss_ce": loss_ce.detach()}
