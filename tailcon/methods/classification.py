"""Single-branch classification baselines: CE, logit-adjusted CE, balanced softmax,
class-balanced (effective-number) CE. One view, plain backbone + classifier."""

from __future__ import annotations

import torch

from ..config import ConfigError, integer, number
from ..losses import (BalancedSoftmaxLoss, ClassBalancedCrossEntropy, CrossEntropy, LDAMLoss,
                      LogitAdjustedCrossEntropy)
from ..data.mixing import mix_batch
from .base import Method, register


class _ClassifierMethod(Method):
    soft_targets = True  # one view and a per-sample loss: Mixup / CutMix apply

    def build_loss(self) -> torch.nn.Module:
        raise NotImplementedError

    def __init__(self, cfg, num_classes, cls_num_list):
        super().__init__(cfg, num_classes, cls_num_list)
        self.criterion = self.build_loss()

    def training_step(self, views, labels):
        d = self.cfg["data"]
        mixed = mix_batch(views[0], labels, float(d["mixup"]), float(d["cutmix"]))
        if mixed is None:
            return {"loss": self.criterion(self(views[0]), labels)}
        images, partners, lam = mixed
        logits = self(images)
        return {"loss": lam * self.criterion(logits, labels) + (1 - lam) * self.criterion(logits, partners)}


@register
class CE(_ClassifierMethod):
    """Plain softmax cross-entropy."""
    name = "ce"
    defaults = {"label_smoothing": 0.0}

    def build_loss(self):
        return CrossEntropy(float(self.hparams["label_smoothing"]))


@register
class LogitAdjusted(_ClassifierMethod):
    """Logit-adjusted CE (Menon et al. 2021): CE(logits + tau log pi) in training, raw logits at test."""
    name = "logit_adjusted"
    defaults = {"tau": 1.0}

    def build_loss(self):
        return LogitAdjustedCrossEntropy(self.cls_num, float(self.hparams["tau"]))


@register
class BalancedSoftmax(_ClassifierMethod):
    """Balanced softmax (Ren et al. 2020): CE(logits + log n_c) in training, raw logits at test."""
    name = "balanced_softmax"
    defaults: dict = {}

    def build_loss(self):
        return BalancedSoftmaxLoss(self.cls_num)


@register
class ClassBalanced(_ClassifierMethod):
    """Class-balanced CE with effective-number weights (Cui et al. 2019)."""
    name = "class_balanced"
    rules = {"beta": number(0, 1, hi_open=True)}
    defaults = {"beta": 0.9999}

    def build_loss(self):
        return ClassBalancedCrossEntropy(self.cls_num, float(self.hparams["beta"]))


@register
class LDAMDRW(_ClassifierMethod):
    """LDAM loss with deferred re-weighting (Cao et al. 2019): label-distribution-aware margins
    m_c ~ n_c^(-1/4) on a cosine classifier (``model.classifier=cosine``; its scale is LDAM's s),
    uniform class weights until ``drw_epoch`` (0-based), effective-number weights with
    ``drw_beta`` from then on. Test time: the cosine logits, no margin."""
    name = "ldam_drw"
    epoch_keys = ("drw_epoch",)
    rules = {"max_margin": number(0), "drw_epoch": integer(0), "drw_beta": number(0, 1, hi_open=True)}
    defaults = {"max_margin": 0.5, "drw_epoch": 160, "drw_beta": 0.9999}

    def build_loss(self):
        if self.cfg["model"]["classifier"] != "cosine":
            raise ConfigError("method ldam_drw needs model.classifier=cosine: LDAM's margins are in cosine units "
                              "(its normalised classifier; model.cosine_scale is its s)")
        return LDAMLoss(self.cls_num.tolist(), float(self.hparams["max_margin"]), float(self.cfg["model"]["cosine_scale"]))

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        # set every epoch (not only at the switch): a resumed run gets the right weights too
        self.criterion.set_reweighting(float(self.hparams["drw_beta"]) if epoch >= int(self.hparams["drw_epoch"]) else 0.0)
