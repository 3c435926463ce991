"""Losses: plain functions on tensors, each with a thin ``nn.Module`` wrapper."""

from .classification import (BalancedSoftmaxLoss, ClassBalancedCrossEntropy, CrossEntropy,
                             LogitAdjustedCrossEntropy, balanced_softmax_loss,
                             class_balanced_cross_entropy, class_balanced_weights, log_prior,
                             logit_adjusted_cross_entropy)

__all__ = [
    "BalancedSoftmaxLoss", "ClassBalancedCrossEntropy", "CrossEntropy", "LogitAdjustedCrossEntropy",
    "balanced_softmax_loss", "class_balanced_cross_entropy", "class_balanced_weights", "log_prior",
    "logit_adjusted_cross_entropy",
]
