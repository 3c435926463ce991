"""PaCo (Cui et al., ICCV 2021) and GPaCo (Cui et al., TPAMI 2023): arXiv:2107.12028, arXiv:2209.12400; dvlab-research/Parametric-Contrastive-Learning@fe56535.

One stage. The classifier's logits on the backbone feature are the "parametric class centres"
of a contrastive softmax whose sample columns are the batch and a labelled FIFO queue.
PaCo: query encoder (backbone + MLP) with a momentum key encoder; the B queries are the anchors
against [queries; keys; queue]. GPaCo: no momentum encoder, both views through the same encoder
are anchors, the queue keeps the detached second-view projections. Test time: the classifier.

Under DDP each process computes the loss on its local anchors against the queue, which is
filled with every process's keys (as the authors' code does).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import integer, number, one_of
from ..losses import GPaCoLoss, PaCoLoss
from ..memory import LabeledQueue, MomentumEncoder
from ..models import ProjectionMLP
from .base import Method, register


class _ProjectedBackbone(nn.Module):
    """Backbone + projection head; ``forward`` -> (pooled features, normalised projections)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone(x)
        return feats, self.head(feats)


_COMMON = {
    "temperature": 0.05,
    "alpha": 0.01,  # weight of each same-class sample in the target
    "beta": 1.0,  # weight of the own class centre
    "gamma": 1.0,  # weight of the sample columns in the denominator
    "supt": 1.0,  # temperature of the centre logits
    "base_temperature": None,  # None: temperature
    "queue_size": 1024,
    "proj_dim": 32,
    "proj_hidden": None,  # None: the backbone's feature size
    "queue_init": "columns",  # columns: the authors' randn normalised along the queue axis; rows: unit keys
    "query_view": "autoaug_cutout",
    "key_view": "sim_cifar",
}
_RULES = {"alpha": number(0), "beta": number(0), "gamma": number(0), "supt": number(0, lo_open=True),
          "queue_size": integer(0), "queue_init": one_of(("columns", "rows"))}


class _Parametric(Method):
    def __init__(self, cfg, num_classes, cls_num_list):
        super().__init__(cfg, num_classes, cls_num_list)
        h = self.hparams
        feat = self.backbone.num_features
        self.encoder = _ProjectedBackbone(self.backbone, self.build_head(feat, int(h["proj_hidden"] or feat),
                                                                         int(h["proj_dim"])))
        # the authors initialise the queue with random labels; they are real labels after K / (global batch) steps
        self.queue = LabeledQueue(int(h["queue_size"]), int(h["proj_dim"]), random_init_labels=True,
                                  init_label_range=num_classes, normalize_dim=0 if h["queue_init"] == "columns" else 1)

    def build_head(self, feat: int, hidden: int, out: int) -> nn.Module:
        raise NotImplementedError

    def view_recipes(self):
        return self.hparams["query_view"], self.hparams["key_view"]

    def loss_kwargs(self) -> dict:
        h = self.hparams
        return dict(temperature=float(h["temperature"]), alpha=float(h["alpha"]), beta=float(h["beta"]),
                    gamma=float(h["gamma"]), supt=float(h["supt"]), base_temperature=h["base_temperature"])


@register
class PaCo(_Parametric):
    name = "paco"
    defaults = {**_COMMON, "momentum": 0.999}
    rules = _RULES

    def __init__(self, cfg, num_classes, cls_num_list):
        super().__init__(cfg, num_classes, cls_num_list)
        self.key_encoder = MomentumEncoder(self.encoder, float(self.hparams["momentum"]))
        self.paco_loss = PaCoLoss(cls_num_list, **self.loss_kwargs())

    def build_head(self, feat, hidden, out):
        return ProjectionMLP(feat, hidden, out, batch_norm=True)  # Linear-BN-ReLU-Linear

    def training_step(self, views, labels):
        query, key = views
        self.key_encoder.update(self.encoder)  # before the keys, as the authors do
        feats, q = self.encoder(query)
        logits = self.classifier(feats)
        k = self.key_encoder(key)[1]
        keys, key_labels = self.queue.keys.clone(), self.queue.labels.clone()  # pushed before backward
        loss = self.paco_loss(q, k, labels, keys, key_labels, logits)
        self.queue.push(k, labels)
        return {"loss": loss}


@register
class GPaCo(_Parametric):
    name = "gpaco"
    defaults = {**_COMMON, "logit_adjust": True, "smooth": 0.0, "key_view": "sim_cifar_blur_p02",
                "separate_forward": False}
    rules = {**_RULES, "smooth": number(0, 1, hi_open=True)}

    def __init__(self, cfg, num_classes, cls_num_list):
        super().__init__(cfg, num_classes, cls_num_list)
        h = self.hparams
        self.gpaco_loss = GPaCoLoss(cls_num_list if h["logit_adjust"] else None, smooth=float(h["smooth"]),
                                    **self.loss_kwargs())

    def build_head(self, feat, hidden, out):
        return ProjectionMLP(feat, hidden, out, batch_norm=False, hidden_layers=2)  # (Linear-ReLU) x 2 - Linear

    def training_step(self, views, labels):
        h = self.hparams
        b = labels.shape[0]
        if h["separate_forward"]:  # each view its own BatchNorm batch
            parts = [self.encoder(v) for v in views]
            feats, z = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        else:
            feats, z = self.encoder(torch.cat(views, dim=0))
        logits = self.classifier(feats)  # [2B, C]: view-1 rows, then view-2 rows
        q, k = z.split(b)
        keys, key_labels = self.queue.keys.clone(), self.queue.labels.clone()
        loss = self.gpaco_loss(q, k, labels, keys, key_labels, logits)
        self.queue.push(k.detach(), labels)
        return {"loss": loss}

