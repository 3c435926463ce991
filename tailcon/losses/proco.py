"""ProCo (Du et al. 2024): contrast logits from online von Mises-Fisher class models (LeapLabTHU/ProCo@af9e78e ProCo_cifar/loss/proco.py; arXiv:2403.06726).

Each class's normalised projections are modelled by a vMF distribution whose mean direction and
concentration come from running first moments (:func:`vmf_update`, :func:`vmf_kappa`). The
expected contrastive term against infinitely many samples of each class has a closed form, a
ratio of vMF normalisers (:func:`proco_logits`), trained with logit-adjusted CE
(:func:`proco_loss`).

The log-Bessel routine is, by default, the authors' Miller recurrence *literally*
(:func:`miller_log_ive`): their numbers were made with it, inaccuracy for large arguments and
batch-dependent rescaling included. :func:`exact_log_ive` (Debye's uniform expansion, accurate to
~1e-10 and better for the feature sizes used) is the alternative (``method.exact_bessel: true``).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence, Union

import torch
import torch.nn.functional as F

from ..distributed import gather_no_grad
from .precision import full_precision

Counts = Union[Sequence[int], torch.Tensor]
LogIve = Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
KAPPA_MAX = 1e5


def miller_log_ive(nu: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log(I_nu(x) e^-x), log(I_{nu+1}(x) e^-x))`` by the authors' backward recurrence (ProCo_cifar/loss/proco.py).

    nu: integer order >= 1; x: any-shape positive tensor, processed as ONE array: the rescaling
    test is global over it, and a rescale in iteration nu (nu - 1) divides the value already
    captured for the nu+1 (nu) output without compensation, as the authors' in-place division
    does. Both quirks are kept on purpose (float64-exact against their outputs). No host sync:
    the global test is a 0-d tensor applied with ``torch.where``.
    """
    if nu < 1:
        raise ValueError(f"miller_log_ive needs an integer order nu >= 1, got {nu}")
    one = torch.ones_like(x)
    a, b = one, torch.zeros_like(x)
    total, total0, total1 = torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(x)
    j0 = j1 = None
    for i in range(2 * nu, 0, -1):
        t = (2 * i / x) * a + b
        rescale = torch.isinf(t).any()  # batch-global, as the authors' `if torch.any(torch.isinf(t))`
        log_a = torch.where(rescale, torch.log(a), torch.zeros_like(a))
        if i == nu:
            j1 = torch.where(rescale, j1 / a, j1)  # the aliasing quirk: j1 *is* b in their code
        if i == nu - 1:
            j0 = torch.where(rescale, j0 / a, j0)
        b = torch.where(rescale, b / a, b)
        total = total + log_a
        if i >= nu + 1:
            total0, total1 = total0 + log_a, total1 + log_a
        elif i == nu:
            total0 = total0 + log_a
        a = torch.where(rescale, one, a)
        t = torch.where(rescale, (2 * i / x) * a + b, t)
        a, b = t, a
        if i == nu:
            j0 = b
        elif i == nu + 1:
            j1 = b
    log_i0e = torch.log(torch.special.i0e(x))
    out0 = log_i0e + torch.log(j0) - torch.log(a) + total0 - total
    out1 = log_i0e + torch.log(j1) - torch.log(a) + total1 - total
    return out0, out1


def exact_log_ive(nu: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log ive(nu, x), log ive(nu + 1, x))`` accurate for every x > 0 (``method.exact_bessel``).

    Debye's uniform asymptotic expansion of I_nu(nu z) to four correction terms, in float64 on
    the tensor's device (no host sync, no underflow where SciPy's ``ive`` returns 0 for large nu).
    Against SciPy, over x in [1e-3, 1e5]: max error of the log 2e-11 for nu = 63 (D = 128),
    3e-13 for nu = 511 (D = 1024), 7e-10 for nu = 31, 3e-8 for nu = 15, 1e-6 for nu = 7.
    """
    return _debye_log_ive(nu, x), _debye_log_ive(nu + 1, x)


def _debye_log_ive(nu: int, x: torch.Tensor) -> torch.Tensor:
    z = x.double() / nu
    root = torch.sqrt(1 + z * z)
    t2 = 1 / (1 + z * z)
    t = torch.sqrt(t2)
    # nu * (eta(z) - z), eta = sqrt(1 + z^2) + log(z / (1 + sqrt(1 + z^2))), with sqrt(1+z^2) - z computed stably
    exponent = nu * (1 / (root + z) + torch.log(z / (1 + root)))
    u1 = t * (3 - 5 * t2) / 24
    u2 = t2 * (81 - 462 * t2 + 385 * t2**2) / 1152
    u3 = t * t2 * (30375 - 369603 * t2 + 765765 * t2**2 - 425425 * t2**3) / 414720
    u4 = t2**2 * (4465125 - 94121676 * t2 + 349922430 * t2**2 - 446185740 * t2**3 + 185910725 * t2**4) / 39813120
    series = 1 + u1 / nu + u2 / nu**2 + u3 / nu**3 + u4 / nu**4
    return (exponent - 0.5 * torch.log(2 * math.pi * nu * root) + torch.log(series)).to(x.dtype)


def vmf_update(ave: torch.Tensor, amount: torch.Tensor, features: torch.Tensor,
               labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One running-moment update of the class means (ProCo_cifar/loss/proco.py); pure, returns the new state.

    ave: [C, D] class means; amount: [C] samples seen; features: [N, D] (detached; under DDP the
    all-gathered batch); labels: [N]. Classes absent from the batch keep their state.
    """
    features = features.detach().to(ave.dtype)
    onehot = F.one_hot(labels, ave.shape[0]).to(ave.dtype)  # [N, C]
    in_batch = onehot.sum(dim=0)  # [C]
    batch_mean = (onehot.t() @ features) / in_batch.clamp(min=1)[:, None]
    weight = torch.where(in_batch > 0, in_batch / (in_batch + amount).clamp(min=1e-300), torch.zeros_like(in_batch))
    return ave * (1 - weight)[:, None] + batch_mean * weight[:, None], amount + in_batch


def bessel_dtype(x: torch.Tensor) -> torch.dtype:
    """The authors run the Bessel routine and kappa/logC in float64 (``k.double()``): in float32
    the recurrence rescales at other iterations, and then, through its batch-global test, shifts
    the contrast logits of a whole batch (by up to 88 nats at D = 128, 709 at D = 1024). MPS has no
    float64: there it stays float32."""
    return torch.float32 if x.device.type == "mps" else torch.float64


def vmf_kappa(ave: torch.Tensor, feat_dim: int, log_ive: LogIve = miller_log_ive) -> tuple[torch.Tensor, torch.Tensor]:
    """Concentrations and log-normalisers ``(kappa [C], logc [C])`` of the class vMFs (ProCo_cifar/loss/proco.py):
    kappa = D R / (1 - R^2), R = ||ave_c||, clipped to 1e5 (also where negative or infinite).
    Computed and returned in float64 (:func:`bessel_dtype`): logC is of the order of kappa, up to
    1e5, and the contrast logits subtract it from a term of the same size."""
    ave = ave.to(bessel_dtype(ave))
    r = ave.norm(dim=1)
    kappa = feat_dim * r / (1 - r * r)
    kappa = torch.where((kappa > KAPPA_MAX) | (kappa < 0) | kappa.isnan(), torch.full_like(kappa, KAPPA_MAX), kappa)
    half = feat_dim / 2 - 1
    logc = log_ive(math.trunc(half), kappa)[0] + kappa - half * torch.log(kappa + 1e-20)
    return kappa, logc


class _LogRatioC(torch.autograd.Function):
    """s = log_ive_nu(kt) + kt - (D/2 - 1) log(kt + 1e-20) - logc, with the authors' gradient
    ds/dkt := min(I_{nu+1}(kt) / I_nu(kt), 1) from the same Bessel routine (ProCo_cifar/loss/proco.py)."""

    @staticmethod
    def forward(ctx, kt, logc, feat_dim, log_ive):
        half = feat_dim / 2 - 1
        dtype, k = kt.dtype, kt.to(bessel_dtype(kt))  # float64 as the authors' `k.double()`, then cast back
        out0, out1 = log_ive(math.trunc(half), k)
        ctx.save_for_backward(torch.exp(out1 - out0).clamp(max=1.0).to(dtype))
        return (out0 + k - half * torch.log(k + 1e-20) - logc.to(k.dtype)).to(dtype)

    @staticmethod
    def backward(ctx, grad):
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None, None, None


@full_precision
def proco_logits(z: torch.Tensor, ave: torch.Tensor, kappa: torch.Tensor, logc: torch.Tensor,
                 temperature: float, log_ive: LogIve = miller_log_ive) -> torch.Tensor:
    """Contrast logits [B, C]: s_ic = log E_{x ~ vMF(mu_c, kappa_c)} exp(<z_i, x> / tau) (ProCo_cifar/loss/proco.py).

    z: [B, D] normalised projections; ave: [C, D] class means (their direction is mu_c); kappa,
    logc: [C] from :func:`vmf_kappa` (constants). Gradients reach ``z`` only.
    """
    mu = F.normalize(ave.detach().to(z.dtype), dim=1)
    # [B, C, D] in z's dtype (the largest tensor of the step); the Bessel part then runs in float64
    kt = (kappa.detach().to(z.dtype)[None, :, None] * mu[None] + z[:, None, :] / temperature).norm(dim=2)  # [B, C]
    return _LogRatioC.apply(kt, logc.detach()[None, :], z.shape[1], log_ive)


def gather_update_batches(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor):
    """The estimator's inputs: both views detached and, under DDP, all-gathered, with the labels."""
    return gather_no_grad(z1.detach()), gather_no_grad(z2.detach()), gather_no_grad(labels)


def proco_loss(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, logits_ce: torch.Tensor,
               cls_num_list: Counts, ave: torch.Tensor, amount: torch.Tensor, *, temperature: float, alpha: float,
               log_ive: LogIve = miller_log_ive, gathered=None):
    """One ProCo training objective (ProCo_cifar/main.py), the estimator updated once per contrastive view.

    z1, z2: [B, D] normalised projections of the two contrastive views; labels: [B]; logits_ce:
    [B, C] classifier logits of the classification view; cls_num_list: [C]; ave: [C, D], amount:
    [C] the estimator state before the step. The estimator is updated with the detached views,
    all-gathered under DDP so that every rank holds the same state; the logits use the local batch.

    Returns ``(loss, loss_ce, loss_scl, logits1, logits2, states)``, ``states`` = [(ave, amount,
    kappa, logc) after the z1 update, the same after the z2 update]; loss = loss_ce + alpha * loss_scl.
    ``gathered``: ``(z1_all, z2_all, labels_all)`` when the caller has all-gathered them already
    (:func:`gather_update_batches`), so that a second estimator can reuse them.
    """
    feat_dim = z1.shape[1]
    z1_all, z2_all, all_labels = gathered if gathered is not None else gather_update_batches(z1, z2, labels)
    counts = torch.as_tensor(cls_num_list, dtype=torch.float64, device=logits_ce.device)
    log_prior = torch.log(counts / counts.sum())
    states, logits = [], []
    for z, z_all in ((z1, z1_all), (z2, z2_all)):
        ave, amount = vmf_update(ave, amount, z_all, all_labels)
        kappa, logc = vmf_kappa(ave, feat_dim, log_ive)
        states.append((ave, amount, kappa, logc))
        logits.append(proco_logits(z, ave, kappa, logc, temperature, log_ive))
    loss_ce = F.cross_entropy(logits_ce + log_prior.to(logits_ce.dtype), labels)
    loss_scl = sum(F.cross_entropy(s + log_prior.to(s.dtype), labels) for s in logits) / 2
    return loss_ce + alpha * loss_scl, loss_ce, loss_scl, logits[0], logits[1], states


__all__ = ["miller_log_ive", "exact_log_ive", "vmf_update", "vmf_kappa", "proco_logits", "proco_loss",
           "gather_update_batches"]
