"""benchmarks/reference_parity.py: reading the authors' printed results, resuming, the statistics."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import reference_parity as rp  # noqa: E402

# a stand-in for the authors' cifar_train.py: the same arguments, printed lines, TensorBoard scalar
# and checkpoint; it stops after STOP_AFTER epochs when that is set (a killed run)
FAKE_REFERENCE = textwrap.dedent('''
    import argparse, os, sys, torch
    from torch.utils.tensorboard import SummaryWriter
    p = argparse.ArgumentParser()
    for a in ("--loss_type", "--train_rule", "--imb_type", "--data_root", "--exp_str", "--root_log",
              "--root_model", "--resume"):
        p.add_argument(a, default="")
    for a in ("--imb_factor",):
        p.add_argument(a, type=float)
    for a in ("--epochs", "--seed", "--workers"):
        p.add_argument(a, type=int)
    args = p.parse_args()
    store = "_".join(["cifar10", "resnet32", args.loss_type, args.train_rule, args.imb_type, str(args.imb_factor), args.exp_str])
    os.makedirs(os.path.join(args.root_log, store), exist_ok=True)
    os.makedirs(os.path.join(args.root_model, store), exist_ok=True)
    print("cls num list:")
    print([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
    start = torch.load(args.resume)["epoch"] if args.resume else 0
    tb = SummaryWriter(os.path.join(args.root_log, store))
    stop = int(os.environ.get("STOP_AFTER", "0"))
    for epoch in range(start, args.epochs):
        print(f"Epoch: [{epoch}][0/97], lr: 0.01000\\tLoss 9.0 (9.0)")
        acc = [0.9 - 0.05 * c + 0.01 * epoch for c in range(10)]
        print(f"val Results: Prec@1 {100 * sum(acc) / 10:.3f} Prec@5 99.000 Loss 1.00000")
        print("val Class Accuracy: [" + ",".join(f"{a:.3f}" for a in acc) + "]")
        tb.add_scalar("loss/train", 5.0 - epoch, epoch)
        tb.flush()
        torch.save({"epoch": epoch + 1}, os.path.join(args.root_model, store, "ckpt.pth.tar"))
        if stop and epoch + 1 == stop:
            sys.exit(1)
''')


def test_the_schedule_scales_as_the_cpu_patch_of_the_authors_code_does():
    assert rp.scaled_schedule(200) == {"warmup": 5, "first": 160, "second": 180, "drw": 160}
    assert rp.scaled_schedule(40) == {"warmup": 1, "first": 32, "second": 36, "drw": 32}
    assert rp.tailcon_overrides("ldam_drw", 40, ["train.amp=bf16"]) == [
        "train.epochs=40", "optim.warmup_epochs=1", "optim.milestones=[32,36]", "method.drw_epoch=32", "train.amp=bf16"]
    assert not any(o.startswith("method.drw_epoch") for o in rp.tailcon_overrides("ce", 40, []))


def test_a_resumed_reference_log_keeps_each_epochs_last_evaluation():
    text = "\n".join(["cls num list:", "[5000, 50]", "Epoch: [0][0/97]", "val Results: Prec@1 10.000",
                      "val Class Accuracy: [0.200,0.000]", "Epoch: [1][0/97]",  # killed in epoch 2
                      "# resumed", "Epoch: [1][0/97]", "val Results: Prec@1 30.500",
                      "val Class Accuracy: [0.500,0.110]"])
    parsed = rp.parse_reference_stdout(text)
    assert parsed["test_top1"] == {1: 10.0, 2: 30.5}
    assert parsed["per_class"][2] == pytest.approx([50.0, 11.0])
    assert parsed["train_counts"] == [5000, 50]
    assert rp.group_means([50.0, 11.0, 7.0], [5000, 50, 10]) == {"many": 50.0, "medium": 11.0, "few": 7.0}


def test_the_difference_interval_is_welchs():
    from scipy import stats

    a, b = [71.2, 72.0, 70.1], [72.5, 73.9, 72.0, 73.0]
    diff, low, high = rp.welch_interval(a, b)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(np.mean(a) - np.mean(b)) and (low, high) == pytest.approx((ci.low, ci.high))
    assert rp.welch_interval([70.0], b) is None, "one seed: no interval"


@pytest.mark.slow
def test_a_killed_reference_run_continues_and_the_table_reads_it_back(tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "cifar_train.py").write_text(FAKE_REFERENCE)
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "benchmarks" / "reference_parity.py"), "--reference", str(ref),
           "--data-root", str(tmp_path), "--epochs", "4", "--seeds", "0", "1", "--out", str(out), "--side", "reference"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**_env(), "STOP_AFTER": "2"})
    assert first.returncode == 0, first.stderr
    assert rp.reference_epochs_done(_args(ref, out), 0) == 2
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())
    assert second.returncode == 0, second.stderr
    result = json.loads((out / "parity.json").read_text())["sides"]["reference"]
    assert [r["seed"] for r in result] == [0, 1]
    run = result[0]
    assert run["top1"] == pytest.approx(100 * np.mean([0.9 - 0.05 * c + 0.03 for c in range(10)]), abs=1e-3)
    assert run["per_class"][9] == pytest.approx(48.0)
    assert run["many"] == pytest.approx(np.mean([93.0 - 5 * c for c in range(8)]))
    assert run["medium"] == pytest.approx(np.mean([53.0, 48.0])) and run["few"] is None
    assert {int(k): v for k, v in run["train_loss"].items()} == {1: 5.0, 2: 4.0, 3: 3.0, 4: 2.0}, \
        "epochs from both attempts"
    page = (out / "parity.md").read_text()
    assert "| top-1 | empty | " in page and "| dog |" in page
    assert (out / "curves.png").stat().st_size > 0


def _env():
    import os

    return {**os.environ, "PYTHONPATH": str(REPO)}


def _args(ref, out):
    import argparse

    return argparse.Namespace(reference=str(ref), out=str(out), loss="ldam_drw", epochs=4)
