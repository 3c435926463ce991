"""Losses: plain functions on tensors, each with a thin ``nn.Module`` wrapper."""

from .contrastive import (BalancedContrastiveLoss, PrototypicalSupConLoss, SupConLoss, bcl_loss, psc_loss,
                          supcon_loss)
from .queue_contrastive import (DSCLLoss, PBSDLoss, dscl_loss, dscl_terms, effective_number_weights, pbsd_loss,
                                pbsd_terms, rescom_contrastive_rows, rescom_logits, rescom_loss)
from .classification import (BalancedSoftmaxLoss, ClassBalancedCrossEntropy, CrossEntropy,
                             LogitAdjustedCrossEntropy, balanced_softmax_loss,
                             class_balanced_cross_entropy, class_balanced_weights, effective_numbers, log_prior,
                             logit_adjusted_cross_entropy)

__all__ = [
    "DSCLLoss", "PBSDLoss", "dscl_loss", "dscl_terms", "effective_number_weights", "pbsd_loss", "pbsd_terms",
    "rescom_contrastive_rows", "rescom_logits", "rescom_loss",
    "BalancedContrastiveLoss", "PrototypicalSupConLoss", "SupConLoss", "bcl_loss", "psc_loss", "supcon_loss",
    "effective_numbers", "BalancedSoftmaxLoss", "ClassBalancedCrossEntropy", "CrossEntropy", "LogitAdjustedCrossEntropy",
    "balanced_softmax_loss", "class_balanced_cross_entropy", "class_balanced_weights", "log_prior",
    "logit_adjusted_cross_entropy",
]
