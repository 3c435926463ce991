"""ResCom: Rebalanced Siamese Contrastive Mining (Zhong et al., arXiv:2203.11506; dvlab-research/Imbalanced-Learning@cc9b810 ResCom/).

One stage, one network ("Siamese": no momentum encoder): both views of the batch go through the
backbone in one call (BN over 2B images); a Balanced-Softmax CE on both views' logits plus a
class-balanced supervised contrastive loss over the batch and hard-mined keys from a
class-balanced queue (k_pos least similar own-class slots, k_neg most similar other-class slots),
weighted per class by effective numbers:  L = L_cls + con_weight * L_con.
After the logits are formed, the view-1 projections enter the queue.
"""

from __future__ import annotations

import torch

from ..config import integer, number, one_of
from ..losses import rescom_logits, rescom_loss
from ..losses.queue_contrastive import mining_counts_problem
from ..memory import ClassBalancedQueue
from ..models import ProjectionMLP
from .base import Method, register
from ..config import ConfigError


@register
class ResCom(Method):
    name = "rescom"
    rules = {"contrast_batch": one_of(("local", "global")), "queue_size_per_class": integer(1), "k_pos": integer(1),
             "k_neg": integer(1),
             "effective_num_beta": number(0, 1, hi_open=True)}
    defaults = {
        "temperature": 0.2,
        "con_weight": 0.5,
        "queue_size_per_class": 10,  # Q
        "k_pos": 1,
        "k_neg": 400,
        "effective_num_beta": 0.999999,
        "proj_dim": 32,
        "view": "autoaug_cutout",  # both views: two draws of the same pipeline
        # under DDP: local = each process contrasts its own batch (and the queue), as the authors; global = all
        "contrast_batch": "local",
    }

    def __init__(self, cfg, num_classes, cls_num_list):
        super().__init__(cfg, num_classes, cls_num_list)
        h = self.hparams
        feat = self.backbone.num_features
        q, c = int(h["queue_size_per_class"]), self.num_classes
        problem = mining_counts_problem(int(h["k_pos"]), int(h["k_neg"]), c, q)
        if problem:  # said before training, in the config's words (Q is method.queue_size_per_class)
            raise ConfigError(f"method.{problem}; change it or method.queue_size_per_class "
                              "(CIFAR-10-LT with Q=10: k_neg at most 90)")
        self.head = ProjectionMLP(feat, feat, int(h["proj_dim"]), batch_norm=True)
        self.queue = ClassBalancedQueue(c, q, int(h["proj_dim"]))

    def view_recipes(self):
        return (self.hparams["view"],) * 2

    def training_step(self, views, labels):
        h = self.hparams
        b = labels.shape[0]
        feats = self.backbone(torch.cat(views, dim=0))  # [view 1 rows; view 2 rows]
        z = self.head(feats)
        logits = self.classifier(feats)
        y = labels.repeat(2)
        # the queue is updated in place below, before backward: give the loss its own copy
        gather = h["contrast_batch"] == "global"
        sim, targets = rescom_logits(z, y, self.queue.keys.clone(), int(h["queue_size_per_class"]),
                                     int(h["k_pos"]), int(h["k_neg"]), gather=gather)
        loss_cls, loss_con, loss = rescom_loss(sim, targets, logits, y, self.cls_num, float(h["temperature"]),
                                               float(h["effective_num_beta"]), float(h["con_weight"]), gather=gather)
        self.queue.push(z[:b].detach(), labels)
        return {"loss": loss, "loss_cls": loss_cls.detach(), "loss_con": loss_con.detach()}
