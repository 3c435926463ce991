"""Losses: plain functions on tensors, each with a thin ``nn.Module`` wrapper."""

from .contrastive import (BalancedContrastiveLoss, PrototypicalSupConLoss, SupConLoss, bcl_loss, psc_loss,
                          supcon_loss)
from .classification import (BalancedSoftmaxLoss, ClassBalancedCrossEntropy, CrossEntropy,
                             LogitAdjustedCrossEntropy, balanced_softmax_loss,
                             class_balanced_cross_entropy, class_balanced_weights, log_prior,
                             logit_adjusted_cross_entropy)

__all__ = [
    "BalancedContrastiveLoss", "PrototypicalSupConLoss", "SupConLoss", "bcl_loss", "psc_loss", "supcon_loss",
    "BalancedSoftmaxLoss", "ClassBalancedCrossEntropy", "CrossEntropy", "LogitAdjustedCrossEntropy",
    "balanced_softmax_loss", "class_balanced_cross_entropy", "class_balanced_weights", "log_prior",
    "logit_adjusted_cross_entropy",
]
