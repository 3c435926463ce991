"""The daily comforts: logs that work without a terminal, a run's own log file, progress messages."""

import pytest

from tailcon.cli import main
from tailcon.engine import train

from conftest import tiny_cfg, write_image_folder


def test_off_a_terminal_training_prints_a_plain_line_every_log_every_steps(tmp_path, capsys):
    train(tiny_cfg(tmp_path, "train.log_every=2", "data.batch_size=64", epochs=1))  # 527 images: 9 steps
    out = capsys.readouterr().out
    steps = [line for line in out.splitlines() if line.startswith("epoch 1/1 step ")]
    assert [line.split()[3] for line in steps] == ["2/9", "4/9", "6/9", "8/9"]
    assert all(" loss " in line and " lr " in line and " img/s ETA " in line for line in steps)


def test_a_run_keeps_what_it_printed_in_train_log_across_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", f"run_dir={run}", "train.epochs=1", "train.max_steps_per_epoch=2", "--no-progress"]) == 0
    first = capsys.readouterr().out
    log = (run / "train.log").read_text()
    assert "Results on the test split" in log and "epoch   1/1" in log
    assert [line for line in first.splitlines() if line.startswith("tailcon: method")][0] in log
    assert main(["train", f"resume={run}", "train.epochs=2", "train.max_steps_per_epoch=2", "--no-progress"]) == 0
    log = (run / "train.log").read_text()
    assert "Results on the test split" in log.split("resuming after epoch 1")[1], "a resume appends"


def test_a_failed_resume_records_its_error_in_train_log(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", f"run_dir={run}", "train.epochs=1", "train.max_steps_per_epoch=2", "--no-progress"]) == 0
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n{"epo\n{"epoch": 1}\n')  # damaged before the last line
    assert main(["train", f"resume={run}", "train.epochs=2", "--no-progress"]) == 2
    assert "damaged record" in (run / "train.log").read_text().splitlines()[-1]


def test_eval_says_what_it_classifies_before_the_figures(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", f"run_dir={run}", "train.epochs=1", "train.max_steps_per_epoch=2", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.index("tailcon eval: classifying the 300 images of the test split") < out.index("top1")


def test_a_run_that_fails_loading_data_leaves_no_empty_runs_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "cifar10_lt/ce", f"data.root={tmp_path / 'nowhere'}"]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [], "neither runs/<date>-<name> nor runs/ is left"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("digits") / "run"
    assert main(["train", f"run_dir={run}", "train.epochs=1", "train.max_steps_per_epoch=2", "--no-progress"]) == 0
    return run


def _image_folder(root, n=3):
    from PIL import Image

    (root / "sub").mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (16, 16), (30 * i, 60, 90)).save((root / "sub" if i else root) / f"{i}.png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_predict_takes_a_folder_and_writes_json_lines(digits_run, tmp_path, capsys):
    import json

    folder = _image_folder(tmp_path / "imgs")
    (folder / "broken.png").write_bytes(b"not a png")
    assert main(["predict", str(digits_run), str(folder), "--json", "--topk", "2"]) == 2
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert sorted(r["image"] for r in records) == sorted(str(p) for p in folder.rglob("*.png"))
    good = [r for r in records if "top" in r]
    assert len(good) == 3 and all(len(r["top"]) == 2 and 0 <= r["top"][0]["probability"] <= 1 for r in good)
    assert [r["image"] for r in records if "error" in r] == [str(folder / "broken.png")]
    assert "tailcon predict:" in captured.err and "1 of 4 images could not be read" in captured.err


def test_features_and_embed_give_the_backbone_features(digits_run, tmp_path, capsys):
    import numpy as np
    import torch

    import tailcon

    folder = _image_folder(tmp_path / "imgs")
    model = tailcon.load(digits_run, device="cpu")
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    feats = model.features(paths)
    with torch.no_grad():
        expected = model.model.backbone(model.preprocess(paths))
    torch.testing.assert_close(feats, expected)
    assert feats.shape == (3, 64)
    out = tmp_path / "feats.npy"
    assert main(["embed", str(digits_run), str(folder), "--out", str(out)]) == 0
    saved = np.load(out)
    listed = (tmp_path / "feats.txt").read_text().splitlines()
    assert listed == paths and saved.dtype == np.float32
    np.testing.assert_allclose(saved, feats.numpy(), rtol=1e-5, atol=1e-6)


def _trainer_without_batchnorm(tmp_path, *overrides):
    import torch

    from tailcon.engine import Trainer

    trainer = Trainer.from_config(tiny_cfg(tmp_path, "method.name=ce", "train.channels_last=false", *overrides, epochs=1))
    for name, module in list(trainer.method.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.BatchNorm2d):  # BatchNorm couples a batch's samples
                setattr(module, child_name, torch.nn.Identity())
    trainer.optimizer = type(trainer.optimizer)(trainer.method.parameters(), **trainer.optimizer.defaults)
    return trainer


def test_accumulated_batches_step_as_one_batch_of_their_size(tmp_path):
    import contextlib

    import torch

    torch.manual_seed(1)
    views, labels = [torch.randn(64, 3, 16, 16)], torch.randint(0, 10, (64,))
    whole = _trainer_without_batchnorm(tmp_path / "a", "data.batch_size=64")
    halves = _trainer_without_batchnorm(tmp_path / "b", "data.batch_size=32", "train.accumulate=2")
    halves.method.load_state_dict(whole.method.state_dict())
    amp = contextlib.nullcontext()
    for _ in range(2):  # two optimiser steps: momentum included
        whole.train_step(views, labels, {}, amp, micro=0, last=True)
        before = [p.detach().clone() for p in halves.method.parameters()]
        halves.train_step([views[0][:32]], labels[:32], {}, amp, micro=0, last=False)
        assert all(torch.equal(a, b) for a, b in zip(before, halves.method.parameters())), "no step mid-way"
        halves.train_step([views[0][32:]], labels[32:], {}, amp, micro=1, last=False)
    for (name, a), b in zip(whole.method.named_parameters(), halves.method.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_gradients_are_clipped_to_clip_grad_norm_before_the_step(tmp_path):
    import contextlib

    import torch

    trainer = _trainer_without_batchnorm(tmp_path, "optim.clip_grad_norm=0.01", "data.batch_size=16")
    norms = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        grads = [p.grad for p in trainer.method.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    trainer.train_step([torch.randn(16, 3, 16, 16)], torch.randint(0, 10, (16,)), {}, contextlib.nullcontext())
    assert norms and norms[0] <= 0.01 * (1 + 1e-4)


def test_ema_weights_are_the_moving_average_of_the_steps_and_survive_a_resume(tmp_path):
    import contextlib
    import json

    import torch

    from tailcon.engine import Trainer, load_checkpoint

    trainer = Trainer.from_config(tiny_cfg(tmp_path / "a", "train.ema=0.5", "data.batch_size=16", epochs=1))
    snapshots = []
    for _ in range(2):
        trainer.train_step([torch.randn(16, 3, 16, 16)], torch.randint(0, 10, (16,)), {}, contextlib.nullcontext())
        snapshots.append({k: v.detach().clone() for k, v in trainer.method.named_parameters()})
    averaged = dict(trainer.ema.module.named_parameters())
    for name, w2 in snapshots[1].items():  # first update copies, then ema = 0.5 ema + 0.5 w
        torch.testing.assert_close(averaged[name], 0.5 * snapshots[0][name] + 0.5 * w2, msg=name)

    from tailcon.engine import Trainer

    class Killed(Exception):
        pass

    args = ("train.ema=0.9", "train.max_steps_per_epoch=3")
    train(tiny_cfg(tmp_path / "c", *args, epochs=2))
    original = Trainer.train_one_epoch

    def dies_in_epoch_2(self, epoch, num_epochs):
        if epoch == 1:
            raise Killed()
        return original(self, epoch, num_epochs)

    Trainer.train_one_epoch = dies_in_epoch_2
    try:
        with pytest.raises(Killed):
            train(tiny_cfg(tmp_path / "b", *args, epochs=2))
    finally:
        Trainer.train_one_epoch = original
    train(tiny_cfg(tmp_path / "b", *args, f"resume={tmp_path / 'b' / 'run'}", epochs=2))
    resumed, straight = (load_checkpoint(tmp_path / d / "run" / "last.pt")["ema"] for d in ("b", "c"))
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)
    results = json.loads((tmp_path / "c" / "run" / "results.json").read_text())
    assert 0 <= results["ema"]["top1"] <= 100 and "ema" in json.loads(
        (tmp_path / "c" / "run" / "metrics.jsonl").read_text().splitlines()[-1])


def test_knn_predict_votes_with_the_nearest_training_features():
    import torch

    from tailcon.engine.geometry import knn_predict

    torch.manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    bank_labels = torch.arange(4).repeat_interleave(10)
    bank = centres[bank_labels] + 0.05 * torch.randn(40, 8)
    query_labels = torch.tensor([3, 1, 0, 2, 2])
    query = centres[query_labels] + 0.05 * torch.randn(5, 8)
    assert knn_predict(query, bank, bank_labels, 4, k=5, chunk=2).tolist() == query_labels.tolist()
    # against a per-query loop
    sims = torch.nn.functional.normalize(query, dim=1) @ torch.nn.functional.normalize(bank, dim=1).t()
    for q in range(5):
        top = sims[q].topk(5)
        votes = torch.zeros(4).index_add_(0, bank_labels[top.indices], (top.values / 0.07).exp())
        assert knn_predict(query[q:q + 1], bank, bank_labels, 4, k=5).item() == int(votes.argmax())


def test_knn_monitor_runs_during_contrastive_pretraining(tmp_path):
    import json

    train(tiny_cfg(tmp_path, "method.name=supcon", "method.stage=pretrain", "train.knn_every=1",
                   "data.batch_size=32", "train.max_steps_per_epoch=2", epochs=2))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["knn"]["split"] for r in records] == ["val", "val"]
    assert all(0 <= r["knn"]["top1"] <= 100 and r["knn"]["k"] == 20 for r in records)


def test_mixup_is_a_convex_combination_with_a_permuted_partner():
    import numpy as np
    import torch

    from tailcon.data.mixing import mix_batch

    np.random.seed(0)
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 6, 6), torch.arange(8)
    mixed, partners, lam = mix_batch(x, y, mixup=0.4, cutmix=0.0)
    assert 0 < lam < 1 and sorted(partners.tolist()) == list(range(8))
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[partners])
    assert mix_batch(x, y, 0.0, 0.0) is None


def test_cutmix_pastes_a_box_whose_area_sets_the_weight():
    import numpy as np
    import torch

    from tailcon.data.mixing import mix_batch

    for seed in range(5):
        np.random.seed(seed)
        torch.manual_seed(seed)
        x, y = torch.randn(4, 3, 16, 16), torch.arange(4)
        mixed, partners, lam = mix_batch(x, y, mixup=0.0, cutmix=1.0)
        pasted = (mixed != x).any(dim=1)  # [B, H, W]: where a partner's pixels came in
        own = partners != y
        assert torch.equal(mixed[~own], x[~own])
        for i in torch.nonzero(own).flatten():
            assert torch.equal(mixed[i][:, pasted[i]], x[partners[i]][:, pasted[i]])
            assert abs(float(pasted[i].float().mean()) - (1 - lam)) < 1e-6


def test_mixing_trains_classification_methods_and_is_refused_for_contrastive_ones(tmp_path, capsys):
    import math

    from tailcon.engine import Trainer

    trainer = Trainer.from_config(tiny_cfg(tmp_path, "method.name=logit_adjusted", "data.mixup=0.2", "data.cutmix=1.0",
                               "train.max_steps_per_epoch=3", epochs=1))
    assert math.isfinite(trainer.train_one_epoch(0, 1)["loss"])
    assert trainer.cfg["data"]["mixup"] == 0.2, "recorded in the run's config"
    assert main(["train", "method.name=bcl", "data.mixup=0.2", f"run_dir={tmp_path / 'bcl'}"]) == 2
    assert "need a loss that takes soft targets" in capsys.readouterr().err


def test_backbone_speed_measures_bf16_beside_fp32():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import backbone_speed

    from tailcon.engine.device import cpu_has_amx

    assert isinstance(cpu_has_amx(), bool)
    for amp in ("none", "bf16"):
        assert backbone_speed.images_per_second("resnet8", "nhwc", batch=4, steps=1, amp=amp) > 0


def test_the_banner_describes_what_runs_with_counts_in_the_right_number(tmp_path, capsys):
    from tailcon.engine.metrics import counted

    assert (counted(1, "epoch"), counted(2, "epoch"), counted(1, "class", "classes"), counted(3, "class", "classes")) \
        == ("1 epoch", "2 epochs", "1 class", "3 classes")
    root = tmp_path / "imgs"
    write_image_folder(root)
    assert main(["train", "data.name=folder", f"data.root={root}", "data.image_size=8", "model.backbone=resnet8",
                 "train.epochs=1", "data.batch_size=2", "train.progress=false", f"run_dir={tmp_path / 'run'}"]) == 0
    out = capsys.readouterr().out
    assert "training from the embedded default config" in out and "handwritten digits" not in out
    assert "data folder (5 train images, 2 classes" in out and "1 epoch on cpu" in out
