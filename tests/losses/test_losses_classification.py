"""Classification losses: golden vectors from the authors' code, plus naive references."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tailcon.losses import (LogitAdjustedCrossEntropy, balanced_softmax_loss, class_balanced_weights,
                            logit_adjusted_cross_entropy)

from conftest import golden_params


@pytest.mark.parametrize("path", golden_params("logit_adjust_"))
def test_logit_adjusted_ce_matches_golden(path):
    g = np.load(path)
    logits = torch.tensor(g["logits"], requires_grad=True)
    loss = logit_adjusted_cross_entropy(logits, torch.tensor(g["labels"]), g["cls_num_list"].tolist(), float(g["tau"]))
    assert loss.dtype == torch.float64 and loss.dim() == 0
    expected = float(g["loss"])
    assert abs(loss.item() - expected) <= 1e-9 * max(1.0, abs(expected))
    loss.backward()
    np.testing.assert_allclose(logits.grad.numpy(), g["grad_logits"], rtol=1e-8, atol=1e-10)
    # the module wrapper and a tensor of counts give the same value; float32 stays close
    mod = LogitAdjustedCrossEntropy(torch.tensor(g["cls_num_list"]), float(g["tau"]))
    torch.testing.assert_close(mod(logits.detach(), torch.tensor(g["labels"])), loss.detach())
    l32 = logit_adjusted_cross_entropy(logits.detach().float(), torch.tensor(g["labels"]), g["cls_num_list"], float(g["tau"]))
    assert abs(l32.item() - expected) <= 1e-5 * max(1.0, abs(expected))


def test_logit_adjusted_ce_naive_reference_and_bf16():
    torch.manual_seed(0)
    logits, labels, counts = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 3, 0]), [40, 20, 5, 1]
    pi = np.array(counts) / sum(counts)
    naive = np.mean([-np.log(np.exp(logits[i].numpy() + 0.7 * np.log(pi))[labels[i]]
                             / np.exp(logits[i].numpy() + 0.7 * np.log(pi)).sum()) for i in range(6)])
    assert abs(logit_adjusted_cross_entropy(logits, labels, counts, 0.7).item() - naive) < 1e-12
    assert torch.isfinite(logit_adjusted_cross_entropy(30 * logits.bfloat16(), labels, counts, 1.0))


def test_balanced_softmax_equals_logit_adjustment_with_tau_one():
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 2, 1])
    torch.testing.assert_close(balanced_softmax_loss(logits, labels, [100, 10, 1]),
                               logit_adjusted_cross_entropy(logits, labels, [100, 10, 1], 1.0))


def test_class_balanced_weights_follow_effective_number():
    w = class_balanced_weights([1000, 10], beta=0.99)
    eff = (1 - 0.99 ** np.array([1000, 10])) / (1 - 0.99)
    ref = (1 / eff) / (1 / eff).sum() * 2
    np.testing.assert_allclose(w.numpy(), ref)
    assert torch.equal(class_balanced_weights([5, 50], beta=0.0), torch.ones(2, dtype=torch.float64))


def test_ce_prior_follows_logits_device_and_dtype():
    logits = torch.randn(2, 3, dtype=torch.bfloat16)
    out = logit_adjusted_cross_entropy(logits, torch.tensor([0, 1]), torch.tensor([3, 2, 1]))
    assert out.dtype == torch.bfloat16
    ref = F.cross_entropy(logits.double() + torch.log(torch.tensor([3, 2, 1.0]) / 6).double(), torch.tensor([0, 1]))
    assert abs(out.double().item() - ref.item()) < 0.05
