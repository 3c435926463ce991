"""Losses: plain functions on tensors, each with a thin ``nn.Module`` wrapper."""

from .contrastive import (BalancedContrastiveLoss, PrototypicalSupConLoss, SupConLoss, bcl_loss, psc_loss,
                          supcon_loss)
from .queue_contrastive import (DSCLLoss, PBSDLoss, dscl_loss, dscl_terms, effective_number_weights, pbsd_loss,
                                pbsd_terms, rescom_contrastive_rows, rescom_logits, rescom_loss)
from .parametric import GPaCoLoss, PaCoLoss, gpaco_loss, paco_loss, parametric_contrastive_loss
from .proco import exact_log_ive, miller_log_ive, proco_logits, proco_loss, vmf_kappa, vmf_update
from .classification import (BalancedSoftmaxLoss, ClassBalancedCrossEntropy, CrossEntropy, LDAMLoss,
                             LogitAdjustedCrossEntropy, balanced_softmax_loss, ldam_loss, ldam_margins,
                             class_balanced_cross_entropy, class_balanced_weights, effective_numbers, log_prior,
                             logit_adjusted_cross_entropy)

__all__ = [
    "GPaCoLoss", "PaCoLoss", "gpaco_loss", "paco_loss", "parametric_contrastive_loss",
    "exact_log_ive", "miller_log_ive", "proco_logits", "proco_loss", "vmf_kappa", "vmf_update",
    "DSCLLoss", "PBSDLoss", "dscl_loss", "dscl_terms", "effective_number_weights", "pbsd_loss", "pbsd_terms",
    "rescom_contrastive_rows", "rescom_logits", "rescom_loss",
    "BalancedContrastiveLoss", "PrototypicalSupConLoss", "SupConLoss", "bcl_loss", "psc_loss", "supcon_loss",
    "effective_numbers", "BalancedSoftmaxLoss", "ClassBalancedCrossEntropy", "CrossEntropy", "LogitAdjustedCrossEntropy",
    "balanced_softmax_loss", "class_balanced_cross_entropy", "class_balanced_weights", "log_prior",
    "logit_adjusted_cross_entropy", "LDAMLoss", "ldam_loss", "ldam_margins",
]
