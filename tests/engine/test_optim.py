"""optim.name: sgd | adamw | lars. LARS against a per-parameter reference; AdamW and LARS leave
biases and normalisation parameters out of weight decay (and LARS out of adaptation); every
optimiser follows every schedule."""

import json

import pytest
import torch
from torch import nn

from tailcon.engine import train
from tailcon.engine.optim import LARS, build_optimizer
from tailcon.rundir import load_checkpoint

from conftest import tiny_cfg

OPTIM = {"name": "lars", "lr": 0.5, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-2, "betas": [0.9, 0.999],
         "eps": 1e-8, "trust_coefficient": 0.02}


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)).double()
    with torch.no_grad():
        net[2].weight.zero_()  # a zero-norm weight: trust ratio 1
    return net


def _reference_lars(net, grads_per_step, o):
    """Per parameter, written out: d = g + wd w; d *= eta ||w|| / ||d|| (1 if a norm is 0);
    v = m v + d; w -= lr v. Biases and BN parameters: d = g, no decay, no ratio."""
    params = [p.detach().clone() for p in net.parameters()]
    bufs = [None] * len(params)
    for grads in grads_per_step:
        for i, (w, g) in enumerate(zip(params, grads)):
            if w.ndim > 1:
                d = g + o["weight_decay"] * w
                wn, dn = float(w.norm()), float(d.norm())
                d = d * (o["trust_coefficient"] * wn / dn if wn > 0 and dn > 0 else 1.0)
            else:
                d = g.clone()
            bufs[i] = d.clone() if bufs[i] is None else o["momentum"] * bufs[i] + d
            params[i] = w - o["lr"] * bufs[i]
    return params


def test_lars_steps_match_a_per_parameter_reference():
    net = _net()
    opt = build_optimizer(net, OPTIM)
    assert isinstance(opt, LARS)
    g = torch.Generator().manual_seed(1)
    grads_per_step = [[torch.randn(p.shape, generator=g, dtype=torch.float64) for p in net.parameters()]
                      for _ in range(3)]
    expected = _reference_lars(net, grads_per_step, OPTIM)
    for grads in grads_per_step:
        for p, grad in zip(net.parameters(), grads):
            p.grad = grad.clone()
        opt.step()
    for p, e in zip(net.parameters(), expected):
        torch.testing.assert_close(p.detach(), e)


def test_adamw_and_lars_exempt_biases_and_norm_parameters_from_weight_decay():
    net = _net()
    for name in ("adamw", "lars"):
        opt = build_optimizer(net, {**OPTIM, "name": name})
        by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
        for pname, p in net.named_parameters():
            group = by_param[id(p)]
            plain = pname.endswith("bias") or pname.startswith("1.")
            assert (group["weight_decay"] == 0.0) == plain, (name, pname)
            if name == "lars":
                assert group["exclude"] == plain
    sgd = build_optimizer(net, {**OPTIM, "name": "sgd"})
    assert all(g["weight_decay"] == OPTIM["weight_decay"] for g in sgd.param_groups)  # as the authors' code


@pytest.mark.parametrize("name", ["adamw", "lars"])
@pytest.mark.parametrize("schedule", ["cosine", "cosine_end", "step", "constant"])
def test_every_optimiser_follows_every_schedule(tmp_path, name, schedule):
    extra = ["optim.lr=0.001"] if name == "adamw" else []
    train(tiny_cfg(tmp_path, f"optim.name={name}", f"optim.schedule={schedule}", "optim.milestones=[1]",
                   "optim.min_lr_ratio=0.1", "train.max_steps_per_epoch=1", "model.backbone=resnet8", *extra, epochs=2))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    groups = load_checkpoint(tmp_path / "run")["optimizer"]["param_groups"]
    assert len(groups) == 2 and all(g["lr"] == pytest.approx(records[-1]["lr"]) for g in groups)
    if schedule != "constant":
        assert records[1]["lr"] < records[0]["lr"]


@pytest.mark.parametrize("case", ["adapted", "excluded"])
def test_lars_takes_timms_steps_where_the_two_definitions_agree(case):
    """timm's Lars divides by ||g|| + wd ||w|| (You et al.'s form), tailcon's by ||g + wd w|| (the
    SimCLR form): the two agree without weight decay, and on excluded (bias / norm) parameters,
    which both step as plain momentum SGD."""
    timm_optim = pytest.importorskip("timm.optim")
    from tailcon.engine.optim import LARS

    torch.manual_seed(0)
    ours_p = [torch.nn.Parameter(torch.randn(6, 5)), torch.nn.Parameter(torch.randn(5))]
    timms_p = [torch.nn.Parameter(p.detach().clone()) for p in ours_p]
    ours = LARS(ours_p, lr=0.5, momentum=0.9, weight_decay=0.0, trust_coefficient=0.02, exclude=case == "excluded")
    timms = timm_optim.Lars(timms_p, lr=0.5, momentum=0.9, weight_decay=0.0, trust_coeff=0.02, eps=0.0,
                            always_adapt=case == "adapted")
    for step in range(4):
        grads = [torch.randn_like(p) for p in ours_p]
        for params, opt in ((ours_p, ours), (timms_p, timms)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
        for a, b in zip(ours_p, timms_p):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=f"step {step}")
