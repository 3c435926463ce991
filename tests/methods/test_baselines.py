"""LDAM-DRW, cRT and tau-normalisation: the loss against a per-sample loop, DRW's switch, cRT's
frozen backbone from a trained run, tau-norm's logits and its choice on validation."""

import json

import pytest
import torch
import torch.nn.functional as F

from tailcon import config, resolution
from tailcon.cli import main
from tailcon.engine import Trainer, train
from tailcon.tools.tau_norm import TAU_GRID, tau_normalized_logits
from tailcon.rundir import load_checkpoint
from tailcon.losses import class_balanced_weights, ldam_loss, ldam_margins

from conftest import tiny_cfg


def test_ldam_loss_matches_a_per_sample_loop():
    g = torch.Generator().manual_seed(0)
    counts = [500, 120, 40, 9]
    logits = torch.randn(12, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 4, (12,), generator=g)
    margins = ldam_margins(counts, 0.5)
    assert margins[-1] == pytest.approx(0.5) and margins[0] == pytest.approx(0.5 * (9 / 500) ** 0.25)
    weights = class_balanced_weights(counts, 0.9999)
    num, den = 0.0, 0.0
    for i in range(12):  # s * (cos - m_y) at the true class, weighted mean over the batch
        z = logits[i].clone()
        z[labels[i]] = z[labels[i]] - 30.0 * margins[labels[i]]
        w = weights[labels[i]]
        num = num + w * -(z[labels[i]] - torch.logsumexp(z, 0))
        den = den + w
    expected = num / den
    got = ldam_loss(logits, labels, margins, 30.0, weights)
    torch.testing.assert_close(got, expected)
    g1, = torch.autograd.grad(got, logits)
    g2, = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(g1, g2)
    with torch.no_grad():
        unweighted = F.cross_entropy(logits - 30.0 * F.one_hot(labels, 4) * margins[labels][:, None], labels)
        torch.testing.assert_close(ldam_loss(logits, labels, margins, 30.0), unweighted)


def test_drw_switches_to_effective_number_weights_at_its_epoch(tmp_path):
    cfg = tiny_cfg(tmp_path, "method.name=ldam_drw", "model.classifier=cosine", "method.drw_epoch=3")
    method = Trainer.from_config(cfg).method
    method.on_epoch_start(2, 10)
    assert torch.equal(method.criterion.weights, torch.ones(10, dtype=torch.float64))
    method.on_epoch_start(3, 10)
    torch.testing.assert_close(method.criterion.weights, class_balanced_weights(method.cls_num, 0.9999))
    with pytest.raises(config.ConfigError, match="model.classifier=cosine"):
        Trainer.from_config(tiny_cfg(tmp_path / "x", "method.name=ldam_drw"))


@pytest.fixture(scope="module")
def ce_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ce")
    train(tiny_cfg(tmp, "model.backbone=resnet8", "train.max_steps_per_epoch=4", epochs=2))
    return tmp / "run"


def test_crt_retrains_only_a_fresh_classifier_on_the_runs_frozen_backbone(ce_run, tmp_path):
    res = train(tiny_cfg(tmp_path, "method.name=crt", f"method.init_from={ce_run}", "model.backbone=resnet8",
                         "data.sampler=class_balanced", "train.max_steps_per_epoch=4", epochs=2))
    assert res["top1"] is not None
    before = load_checkpoint(ce_run)["model"]
    after = load_checkpoint(tmp_path / "run")["model"]
    backbone = [k for k in before if k.startswith("backbone.")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)  # BN statistics included
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    with pytest.raises(config.ConfigError, match="model.backbone=resnet8"):
        train(tiny_cfg(tmp_path / "other", "method.name=crt", f"method.init_from={ce_run}", "model.backbone=resnet20",
                       epochs=1))
    with pytest.raises(config.ConfigError, match="init_from"):
        Trainer.from_config(tiny_cfg(tmp_path / "none", "method.name=crt", epochs=1))


def test_tau_normalised_logits():
    g = torch.Generator().manual_seed(2)
    clf = torch.nn.Linear(5, 3)
    feats = torch.randn(4, 5, generator=g)
    torch.testing.assert_close(tau_normalized_logits(feats, clf, 0.0), feats @ clf.weight.detach().t())
    unit = clf.weight.detach() / clf.weight.detach().norm(dim=1, keepdim=True)
    torch.testing.assert_close(tau_normalized_logits(feats, clf, 1.0), feats @ unit.t())


def test_eval_tau_norm_auto_picks_the_best_tau_on_validation(ce_run, capsys):
    assert main(["eval", str(ce_run), "--tau-norm", "auto", "device=cpu"]) == 0
    out = json.loads((ce_run / "eval-last-test-taunorm.json").read_text())
    chosen = out["tau_norm"]
    assert chosen["selected_on"] == "val" and set(map(float, chosen["grid_top1"])) == set(TAU_GRID)
    assert chosen["grid_top1"][str(chosen["tau"])] == max(chosen["grid_top1"].values())
    assert "tau-normalised, tau=" in capsys.readouterr().out
    plain = json.loads((ce_run / "eval-last-test.json").read_text())
    assert "tau_norm" not in plain and {"top1", "top5", "ece"} <= set(out)
    assert main(["eval", str(ce_run), "--tau-norm", "0.5", "device=cpu"]) == 0
    assert json.loads((ce_run / "eval-last-test-taunorm.json").read_text())["tau_norm"] == {"tau": 0.5,
                                                                                             "selected_on": "given"}
    assert main(["eval", str(ce_run), "--tau-norm", "abc"]) == 2


def test_ldam_drw_and_crt_ship_cifar_configs():
    for ds in ("cifar10_lt", "cifar100_lt"):
        cfg = resolution.resolve(f"{ds}/ldam_drw")
        assert cfg["method"]["name"] == "ldam_drw" and cfg["model"]["classifier"] == "cosine"
        crt = resolution.resolve(f"{ds}/crt", ["method.init_from=somewhere"])
        assert crt["data"]["sampler"] == "class_balanced" and crt["train"]["epochs"] == 10
