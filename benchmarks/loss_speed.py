"""Forward+backward time of tailcon's batched losses against per-anchor (naive) formulations.

The naive versions loop over anchors in Python with torch ops, the way a per-sample reading of
the formulas is written; they give the same values (checked here before timing).

    python benchmarks/loss_speed.py [--batch 256] [--classes 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from tailcon.losses import bcl_loss, dscl_loss, supcon_loss


def naive_supcon(features: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    b, v, _ = features.shape
    z = features.transpose(0, 1).reshape(b * v, -1)
    y = labels.repeat(v)
    rows = []
    for a in range(len(z)):  # one anchor at a time
        sims = z[a] @ z.T / tau
        others = torch.arange(len(z)) != a
        log_denom = torch.logsumexp(sims[others], dim=0)
        pos = others & (y == y[a])
        rows.append(-(sims[pos] - log_denom).mean())
    return torch.stack(rows).mean()


def naive_bcl(features: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor, tau: float) -> torch.Tensor:
    b = features.shape[0]
    z = torch.cat([features[:, 0], features[:, 1], centers])
    y = torch.cat([labels, labels, torch.arange(centers.shape[0])])
    rows = []
    for a in range(2 * b):
        sims = z[a] @ z.T / tau
        others = torch.arange(len(z)) != a
        denom = 0
        for m in range(centers.shape[0]):  # class-averaged negatives, one class at a time
            members = others & (y == m)
            denom = denom + sims[members].exp().mean()
        pos = others & (y == y[a])
        rows.append(-(sims[pos] - denom.log()).mean())
    return torch.stack(rows).mean()


def naive_dscl(q, k, queue, queue_labels, labels, tau, beta):
    keys = torch.cat([q, k, queue])
    key_labels = torch.cat([labels, labels, queue_labels])
    rows = []
    b = q.shape[0]
    for a in range(b):
        sims = q[a] @ keys.T / tau
        others = torch.arange(len(keys)) != a
        others = others & ((key_labels >= 0) | (torch.arange(len(keys)) < 2 * b))
        log_prob = sims - torch.logsumexp(sims[others], dim=0)
        own = b + a
        pos = others & (key_labels == labels[a])
        pos[own] = False
        n = pos.sum()
        w_other = torch.where(n > 0, beta / n.clamp(min=1), torch.zeros(()))
        target = (log_prob[own] + w_other * log_prob[pos].sum()) / (1 + torch.where(n > 0, beta, 0.0))
        rows.append(-target)
    return torch.stack(rows).mean()


def timed(fn, inputs, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        leaves = [x.detach().requires_grad_(x.is_floating_point()) for x in inputs]
        start = time.perf_counter()
        fn(*leaves).backward()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queue", type=int, default=4096)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(a.batch, 2, a.dim, generator=g), dim=-1)
    labels = torch.randint(0, a.classes, (a.batch,), generator=g)
    centers = F.normalize(torch.randn(a.classes, a.dim, generator=g), dim=-1)
    queue = F.normalize(torch.randn(a.queue, a.dim, generator=g), dim=-1)
    queue_labels = torch.randint(0, a.classes, (a.queue,), generator=g)
    cases = {
        "supcon": (lambda f: supcon_loss(f, labels, 0.1, 0.1), lambda f: naive_supcon(f, labels, 0.1), [feats]),
        "bcl": (lambda f, c: bcl_loss(f, labels, c, 0.1), lambda f, c: naive_bcl(f, labels, c, 0.1), [feats, centers]),
        "dscl": (lambda q, k: dscl_loss(q, k.detach(), queue, queue_labels, labels, 0.07, 8.0),
                 lambda q, k: naive_dscl(q, k.detach(), queue, queue_labels, labels, 0.07, 8.0),
                 [feats[:, 0], feats[:, 1]]),
    }
    print(f"batch {a.batch}, 2 views, dim {a.dim}, {a.classes} classes, queue {a.queue}, "
          f"{torch.get_num_threads()} threads; forward+backward, best of {a.repeat}")
    print(f"{'loss':8s} {'tailcon ms':>11s} {'naive ms':>10s} {'speed-up':>9s} {'|diff|':>9s}")
    for name, (fast, naive, inputs) in cases.items():
        diff = abs(float(fast(*inputs)) - float(naive(*inputs)))
        t_fast, t_naive = timed(fast, inputs, a.repeat), timed(naive, inputs, max(1, a.repeat // 2))
        print(f"{name:8s} {t_fast * 1e3:11.2f} {t_naive * 1e3:10.1f} {t_naive / t_fast:8.0f}x {diff:9.1e}")


if __name__ == "__main__":
    main()
