"""SupCon, BCL and PSC losses: golden vectors from the authors' code, naive per-anchor
references, half precision, and 2-process DDP equivalence."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tailcon.losses import bcl_loss, psc_loss, supcon_loss

from conftest import golden_params
from ddp_utils import run_ddp


def _check(loss, expected):
    assert loss.dim() == 0 and loss.dtype == torch.float64
    assert abs(loss.item() - expected) <= 1e-9 * max(1.0, abs(expected)), (loss.item(), expected)


def _close(grad, expected):
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("path", golden_params("supcon_"))
def test_supcon_matches_golden(path):
    g = np.load(path)
    x = torch.tensor(g["features"], requires_grad=True)
    loss = supcon_loss(x, torch.tensor(g["labels"]), float(g["temperature"]), float(g["base_temperature"]))
    _check(loss, float(g["loss"]))
    loss.backward()
    _close(x.grad, g["grad_features"])
    l32 = supcon_loss(x.detach().float(), torch.tensor(g["labels"]), float(g["temperature"]), float(g["base_temperature"]))
    assert abs(l32.item() - float(g["loss"])) <= 1e-5 * max(1.0, abs(float(g["loss"])))


@pytest.mark.parametrize("path", golden_params("bcl_"))
def test_bcl_matches_golden(path):
    g = np.load(path)
    x = torch.tensor(g["features"], requires_grad=True)
    c = torch.tensor(g["centers"], requires_grad=True)
    assert c.shape[0] == len(g["cls_num_list"])
    loss = bcl_loss(x, torch.tensor(g["labels"]), c, float(g["temperature"]))
    _check(loss, float(g["loss"]))
    loss.backward()
    _close(x.grad, g["grad_features"])
    _close(c.grad, g["grad_centers"])


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def naive_supcon(features, labels, tau, tau_b):
    b, v, _ = features.shape
    z = [features[i, k] for k in range(v) for i in range(b)]
    lab = [int(labels[i]) for k in range(v) for i in range(b)]
    total = 0.0
    for a in range(len(z)):
        denom = sum(math.exp(float(z[a] @ z[k]) / tau) for k in range(len(z)) if k != a)
        pos = [p for p in range(len(z)) if p != a and lab[p] == lab[a]]
        total += -(tau / tau_b) * sum(float(z[a] @ z[p]) / tau - math.log(denom) for p in pos) / len(pos)
    return total / len(z)


def naive_bcl(features, labels, centers, tau):
    """Spec 4.3 literally: per anchor, per class, the mean exp-similarity excluding the anchor."""
    b = features.shape[0]
    anchors = [(features[i, k], int(labels[i])) for k in range(2) for i in range(b)]
    entries = anchors + [(centers[m], m) for m in range(centers.shape[0])]
    total = 0.0
    for a, (za, la) in enumerate(anchors):
        z_denom = 0.0
        for m in range(centers.shape[0]):
            sims = [math.exp(float(za @ zk) / tau) for k, (zk, lk) in enumerate(entries) if lk == m and k != a]
            z_denom += sum(sims) / len(sims)
        pos = [k for k, (_, lk) in enumerate(entries) if lk == la and k != a]
        total += -sum(float(za @ entries[p][0]) / tau - math.log(z_denom) for p in pos) / len(pos)
    return total / len(anchors)


def test_supcon_matches_naive_reference_with_three_views():
    x, y = _unit(5, 3, 6), torch.tensor([0, 1, 0, 2, 1])
    assert abs(supcon_loss(x, y, 0.2, 0.3).item() - naive_supcon(x, y, 0.2, 0.3)) < 1e-12


def test_bcl_matches_naive_reference_with_absent_and_singleton_classes():
    x, y, c = _unit(6, 2, 5), torch.tensor([0, 0, 1, 3, 3, 3]), _unit(5, 5, seed=1)
    assert abs(bcl_loss(x, y, c, 0.1).item() - naive_bcl(x, y, c, 0.1)) < 1e-12


def test_psc_paper_form_excludes_the_positive_prototype():
    x, y, p = _unit(4, 2, 6), torch.tensor([0, 1, 2, 1]), _unit(3, 6, seed=2)
    tau = 0.5
    naive = []
    for k in range(2):
        for i in range(4):
            s = (p @ x[i, k]) / tau
            neg = torch.cat([s[: y[i]], s[y[i] + 1:]])
            naive.append(float(torch.logsumexp(neg, 0) - s[y[i]]))
    assert abs(psc_loss(x, y, p, tau).item() - np.mean(naive)) < 1e-12
    ce = F.cross_entropy((x.transpose(0, 1).reshape(8, 6) @ p.t()) / tau, y.repeat(2))
    assert abs(psc_loss(x, y, p, tau, include_positive_in_denominator=True).item() - ce.item()) < 1e-12
    e = torch.eye(3, dtype=torch.float64)
    aligned = psc_loss(e[:1, None].repeat(2, 2, 1), torch.zeros(2, dtype=torch.long), torch.stack([e[0], -e[0], -e[0]]), 0.1)
    assert abs(aligned.item() - (-2 / 0.1 + math.log(2))) < 1e-9, "paper form: bounded by -2/tau + log(C-1), not 0"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("tau", [0.05, 0.1])
def test_losses_are_finite_and_close_in_half_precision(dtype, tau):
    x, y, c = _unit(16, 2, 32), torch.randint(0, 5, (16,), generator=torch.Generator().manual_seed(3)), _unit(5, 32, seed=4)
    for fn, args in ((supcon_loss, ()), (bcl_loss, (c,)), (psc_loss, (c,))):
        ref = fn(x, y, *args, tau)
        half = fn(x.to(dtype), y, *[a.to(dtype) for a in args], tau)
        assert torch.isfinite(half)
        assert abs(half.item() - ref.item()) < 0.05 * max(1.0, abs(ref.item())), fn.__name__


def test_single_view_supcon_anchor_without_positive_is_zero_not_nan():
    loss = supcon_loss(_unit(3, 1, 4), torch.tensor([0, 1, 2]), 0.1)
    assert loss.item() == 0.0


def _ddp_losses(rank, world, x, y, c):
    half = x.shape[0] // world
    sl = slice(rank * half, (rank + 1) * half)
    out = {}
    for name, fn, extra in (("supcon", supcon_loss, ()), ("bcl", bcl_loss, (c,))):
        xs = x[sl].clone().requires_grad_(True)
        cs = c.clone().requires_grad_(True)
        loss = fn(xs, y[sl], *((cs,) if extra else ()), 0.1)
        loss.backward()
        out[name] = (loss.item(), xs.grad, cs.grad if extra else None)
    return out


@pytest.mark.slow
def test_ddp_two_processes_compute_the_whole_batch_loss_and_gradients(tmp_path):
    x, y, c = _unit(8, 2, 16), torch.tensor([0, 1, 2, 0, 1, 1, 3, 0]), _unit(4, 16, seed=5)
    results = run_ddp(_ddp_losses, x, y, c, tmp_path=tmp_path)
    for name, fn in (("supcon", supcon_loss), ("bcl", bcl_loss)):
        xf = x.clone().requires_grad_(True)
        cf = c.clone().requires_grad_(True)
        full = fn(xf, y, *((cf,) if name == "bcl" else ()), 0.1)
        full.backward()
        for rank, res in enumerate(results):
            loss, gx, gc = res[name]
            assert abs(loss - full.item()) < 1e-12, (name, rank)
            # the local shard gets world x the gradient; DDP's averaging divides it back
            torch.testing.assert_close(gx / 2, xf.grad[rank * 4:(rank + 1) * 4], rtol=1e-10, atol=1e-12)
            if gc is not None:
                torch.testing.assert_close(gc, cf.grad, rtol=1e-10, atol=1e-12)


def test_contrastive_losses_ignore_autocast_and_compute_in_float32():
    import torch.nn.functional as F

    from tailcon.losses import gpaco_loss, supcon_loss

    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(16, 2, 32, generator=g), dim=2).bfloat16()
    labels = torch.randint(0, 4, (16,), generator=g)
    plain = supcon_loss(feats, labels, 0.07)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = supcon_loss(feats, labels, 0.07)
        q, k = feats[:, 0], feats[:, 1]
        g_auto = gpaco_loss(q, k, labels, q[:0], labels[:0], torch.zeros(32, 4), None, temperature=0.07, alpha=1.0)
    assert autocast.dtype == torch.float32 and torch.equal(autocast, plain), "no bf16 matrix product inside"
    g_plain = gpaco_loss(q, k, labels, q[:0], labels[:0], torch.zeros(32, 4), None, temperature=0.07, alpha=1.0)
    assert torch.equal(g_auto, g_plain)
