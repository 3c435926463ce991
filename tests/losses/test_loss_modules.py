"""Each loss's thin ``nn.Module`` wrapper computes exactly its function, with its settings."""

import pytest
import torch
import torch.nn.functional as F

from tailcon import losses as L

B, D, C, K, NUM_PATCHES = 6, 8, 3, 10, 2


def unit(*shape):
    return F.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


def cases():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    labels = torch.randint(0, C, (B,), generator=g)
    counts = [50, 10, 2]
    logits = torch.randn(B, C, dtype=torch.float64)
    views, centers = unit(B, 2, D), unit(C, D)
    q, k, queue, queue_labels = unit(B, D), unit(B, D), unit(K, D), torch.randint(-1, C, (K,), generator=g)
    roi, small = unit(NUM_PATCHES, B, D), unit(NUM_PATCHES, B, D)
    return [
        ("logit_adjusted", L.LogitAdjustedCrossEntropy(counts, tau=0.5), (logits, labels),
         lambda: L.logit_adjusted_cross_entropy(logits, labels, torch.tensor(counts, dtype=torch.float64), 0.5)),
        ("balanced_softmax", L.BalancedSoftmaxLoss(counts), (logits, labels),
         lambda: L.balanced_softmax_loss(logits, labels, torch.tensor(counts, dtype=torch.float64))),
        ("class_balanced", L.ClassBalancedCrossEntropy(counts, beta=0.99), (logits, labels),
         lambda: L.class_balanced_cross_entropy(logits, labels, L.class_balanced_weights(counts, 0.99))),
        ("cross_entropy", L.CrossEntropy(label_smoothing=0.1), (logits, labels),
         lambda: F.cross_entropy(logits, labels, label_smoothing=0.1)),
        ("supcon", L.SupConLoss(temperature=0.2, base_temperature=0.07), (views, labels),
         lambda: L.supcon_loss(views, labels, 0.2, 0.07)),
        ("bcl", L.BalancedContrastiveLoss(temperature=0.3), (views, labels, centers),
         lambda: L.bcl_loss(views, labels, centers, 0.3)),
        ("psc", L.PrototypicalSupConLoss(temperature=0.3, include_positive_in_denominator=True),
         (views, labels, centers), lambda: L.psc_loss(views, labels, centers, 0.3, True)),
        ("dscl", L.DSCLLoss(temperature=0.1, weighted_beta=4.0), (q, k, queue, queue_labels, labels),
         lambda: L.dscl_loss(q, k, queue, queue_labels, labels, 0.1, 4.0)),
        ("pbsd", L.PBSDLoss(temperature=0.1), (roi, small, k, queue),
         lambda: L.pbsd_loss(roi, small, k, queue, 0.1)),
        ("paco", L.PaCoLoss(counts, temperature=0.2, alpha=0.05, beta=0.9), (q, k, labels, queue, queue_labels, logits),
         lambda: L.paco_loss(q, k, labels, queue, queue_labels, logits, counts, temperature=0.2, alpha=0.05, beta=0.9)),
        ("gpaco", L.GPaCoLoss(None, temperature=0.2, alpha=0.05, smooth=0.1),
         (q, k, labels, queue, queue_labels, torch.cat([logits, logits])),
         lambda: L.gpaco_loss(q, k, labels, queue, queue_labels, torch.cat([logits, logits]), None, temperature=0.2,
                              alpha=0.05, smooth=0.1)),
    ]


@pytest.mark.parametrize("index", range(len(cases())), ids=[c[0] for c in cases()])
def test_loss_module_equals_its_function_with_the_same_settings(index):
    name, module, args, reference = cases()[index]
    got, want = module(*args), reference()
    assert got.shape == () and torch.isfinite(got), name
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_loss_modules_keep_class_counts_as_buffers_that_follow_the_module():
    mod = L.LogitAdjustedCrossEntropy([5, 1])
    assert "cls_num" in dict(mod.named_buffers()) and "cls_num" not in mod.state_dict()  # not persisted
