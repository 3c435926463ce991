"""PaCo, GPaCo and ProCo losses against the authors' code (golden float64 vectors), naive
references and the properties the methods rely on."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tailcon.losses import (exact_log_ive, gpaco_loss, miller_log_ive, paco_loss, proco_logits, proco_loss, vmf_kappa,
                            vmf_update)

from conftest import golden_params

TOL = dict(rtol=1e-9, atol=1e-12)


def _load(path):
    z = np.load(path)
    return z, {k: torch.tensor(z[k]) for k in z.files}


def _close(got, want, name):
    got = got.detach().numpy() if torch.is_tensor(got) else np.asarray(got)
    assert np.allclose(got, want, **TOL), f"{name}: max abs error {np.max(np.abs(got - want)) if got.size else 0}"


@pytest.mark.parametrize("path", golden_params("paco_loss_case"))
def test_paco_loss_and_gradients_match_the_authors(path):
    z, t = _load(path)
    q = t["q"].clone().requires_grad_()
    logits = t["sup_logits"].clone().requires_grad_()
    loss = paco_loss(q, t["k"], t["labels"], t["queue"], t["queue_labels"], logits, t["cls_num_list"],
                     temperature=float(z["temperature"]), alpha=float(z["alpha"]), beta=float(z["beta"]),
                     gamma=float(z["gamma"]), supt=float(z["supt"]), base_temperature=float(z["base_temperature"]))
    loss.backward()
    _close(loss, z["expected_loss"], "loss")
    _close(q.grad, z["grad_q"], "grad_q")
    _close(logits.grad, z["grad_sup_logits"], "grad_sup_logits")


@pytest.mark.parametrize("path", golden_params("gpaco_loss_case"))
def test_gpaco_loss_and_gradients_match_the_authors(path):
    z, t = _load(path)
    q, k = t["q"].clone().requires_grad_(), t["k"].clone().requires_grad_()
    logits = t["sup_logits"].clone().requires_grad_()
    loss = gpaco_loss(q, k, t["labels"], t["queue"], t["queue_labels"], logits,
                      t["cls_num_list"] if int(z["logit_adjust"]) else None, temperature=float(z["temperature"]),
                      alpha=float(z["alpha"]), beta=float(z["beta"]), gamma=float(z["gamma"]), supt=float(z["supt"]),
                      base_temperature=float(z["base_temperature"]), smooth=float(z["smooth"]))
    loss.backward()
    _close(loss, z["expected_loss"], "loss")
    for name, x in (("grad_q", q), ("grad_k", k), ("grad_sup_logits", logits)):
        _close(x.grad, z[name], name)


@pytest.mark.parametrize("path", golden_params("proco_vmf_case"))
def test_vmf_estimator_and_the_miller_routine_match_the_authors(path):
    z, t = _load(path)
    ave, amount = vmf_update(t["ave_before"], t["amount_before"], t["features"], t["labels"])
    _close(ave, z["expected_ave_after"], "ave")
    assert torch.equal(amount, t["expected_amount_after"]), "counts are exact"
    kappa, logc = vmf_kappa(ave, int(z["feat_dim"]))
    _close(kappa, z["expected_kappa_after"], "kappa")
    _close(logc, z["expected_logc_after"], "logc")
    nu = int(z["bessel_nu"])
    batched = miller_log_ive(nu, t["bessel_x"])  # one call: the rescale quirk depends on the whole array
    _close(batched[0], z["expected_log_ive_nu"], "log_ive_nu")
    _close(batched[1], z["expected_log_ive_nu1"], "log_ive_nu1")
    alone = [miller_log_ive(nu, x.reshape(1)) for x in t["bessel_x"]]
    _close(torch.cat([a[0] for a in alone]), z["expected_log_ive_nu_elementwise"], "elementwise nu")
    _close(torch.cat([a[1] for a in alone]), z["expected_log_ive_nu1_elementwise"], "elementwise nu+1")


@pytest.mark.parametrize("path", golden_params("proco_loss_case"))
def test_proco_step_states_logits_losses_and_gradients_match_the_authors(path):
    z, t = _load(path)
    z1, z2 = t["feat_view1"].clone().requires_grad_(), t["feat_view2"].clone().requires_grad_()
    logits_ce = t["logits_ce"].clone().requires_grad_()
    loss, loss_ce, loss_scl, s1, s2, states = proco_loss(
        z1, z2, t["labels"], logits_ce, t["cls_num_list"], t["ave_before"], t["amount_before"],
        temperature=float(z["temperature"]), alpha=float(z["alpha"]))
    loss.backward()
    for name, got in (("loss", loss), ("loss_ce", loss_ce), ("loss_scl", loss_scl), ("contrast_logits1", s1),
                      ("contrast_logits2", s2)):
        _close(got, z[f"expected_{name}"], name)
    for i, (ave, amount, kappa, logc) in enumerate(states, start=1):
        _close(ave, z[f"expected_ave_after{i}"], f"ave{i}")
        assert torch.equal(amount, t[f"expected_amount_after{i}"])
        _close(kappa, z[f"expected_kappa_after{i}"], f"kappa{i}")
        _close(logc, z[f"expected_logc_after{i}"], f"logc{i}")
    _close(z1.grad, z["grad_feat_view1"], "grad z1")
    _close(z2.grad, z["grad_feat_view2"], "grad z2")
    _close(logits_ce.grad, z["grad_logits_ce"], "grad logits_ce")


def _naive_paco(features, labels, centre, prior, tau, alpha, na):
    """Spec A.3, one anchor at a time (beta = gamma = supt = 1)."""
    losses = []
    for i in range(na):
        u = centre[i] + torch.log(prior + 1e-9)
        v = torch.stack([features[i] @ features[j] / tau for j in range(len(features))])
        row = torch.cat([u, v])
        row = row - row.max()
        keep = torch.ones_like(row, dtype=torch.bool)
        keep[len(u) + i] = False
        log_den = torch.log(row.exp()[keep].sum() + 1e-12)
        targets = [(labels[i].item(), 1.0)] + [(len(u) + j, alpha) for j in range(len(features))
                                                if j != i and labels[j] == labels[i]]
        num = sum(w * (row[c] - log_den) for c, w in targets)
        losses.append(-num / sum(w for _, w in targets))
    return torch.stack(losses).mean()


def test_paco_loss_equals_a_per_anchor_loop_and_works_with_an_empty_queue():
    g = torch.Generator().manual_seed(1)
    b, d, c = 6, 5, 4
    q = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(0, c, (b,), generator=g)
    logits = torch.randn(b, c, generator=g, dtype=torch.float64)
    counts = torch.tensor([40, 10, 5, 1])
    empty = torch.zeros(0, d, dtype=torch.float64)
    got = paco_loss(q, k, labels, empty, torch.zeros(0, dtype=torch.long), logits, counts, temperature=0.1, alpha=0.05)
    prior = counts.double() / counts.sum()
    want = _naive_paco(torch.cat([q, k]), torch.cat([labels, labels]), logits, prior, 0.1, 0.05, b)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_exact_bessel_matches_scipy_and_miller_only_where_miller_is_accurate():
    from scipy.special import ive

    x = torch.logspace(-3, 5, 60, dtype=torch.float64)
    for nu in (63, 64):
        exact = exact_log_ive(63, x)[nu - 63]
        torch.testing.assert_close(exact, torch.from_numpy(np.log(ive(nu, x.numpy()))), rtol=0, atol=1e-10)
    small = torch.tensor([0.5, 5.0, 50.0, 300.0], dtype=torch.float64)
    torch.testing.assert_close(miller_log_ive(63, small)[0], exact_log_ive(63, small)[0], rtol=0, atol=1e-10)
    far = torch.tensor([1e4], dtype=torch.float64)
    assert abs(float(miller_log_ive(63, far)[0] - exact_log_ive(63, far)[0])) > 0.1, "Miller drifts (spec C.4)"
    assert torch.isfinite(exact_log_ive(511, torch.tensor([1.0, 10.0], dtype=torch.float64))[0]).all(), \
        "no underflow at D = 1024, where SciPy's ive is 0"


def test_proco_logits_gradient_is_the_clipped_bessel_ratio():
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(3, 8, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    ave = 0.7 * F.normalize(torch.randn(4, 8, generator=g, dtype=torch.float64), dim=1)
    kappa, logc = vmf_kappa(ave, 8)
    proco_logits(z, ave, kappa, logc, 0.1).sum().backward()
    kt = (kappa[None, :, None] * F.normalize(ave, dim=1)[None] + z.detach()[:, None, :] / 0.1)
    n0, n1 = miller_log_ive(3, kt.norm(dim=2))
    ratio = torch.exp(n1 - n0).clamp(max=1.0)
    want = (ratio[:, :, None] * kt / kt.norm(dim=2, keepdim=True) / 0.1).sum(dim=1)
    torch.testing.assert_close(z.grad, want, rtol=1e-10, atol=1e-12)
