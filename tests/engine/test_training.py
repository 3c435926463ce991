"""End-to-end training on the embedded digits data: learning, resumption, checkpoints, eval, CLI."""

import json

import pytest
import torch

from tailcon import config, resolution
from tailcon.cli import embedded_config_path, main
from tailcon.engine import NonFiniteLossError, Trainer, load_checkpoint, train
from tailcon.tools.evaluate import evaluate_checkpoint
from tailcon import rundir as ckpt_mod

from conftest import tiny_cfg


def test_four_epochs_on_embedded_data_beat_chance(tmp_path):
    res = train(tiny_cfg(tmp_path, "optim.lr=0.1", epochs=4))
    assert res["top1"] > 25.0, f"10 classes: chance is 10%, got {res['top1']}"
    assert set(["top1", "many", "medium", "few", "per_class", "train_counts"]) <= set(res)
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "results.json"):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir()), "TensorBoard events"
    records = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert {"loss", "lr", "time_s", "images_per_s", "val"} <= set(records[0])
    saved = config.load_yaml(run / "config.yaml")
    assert saved["train"]["epochs"] == 4 and saved["method"] == {"name": "logit_adjusted", "tau": 1.0}


class _Killed(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("method", ["logit_adjusted", "proco"])  # proco: estimator state crosses epochs
def test_resume_after_a_kill_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, monkeypatch, method):
    common = ("train.max_steps_per_epoch=3", "train.eval_every=2", "data.sampler=class_balanced",
              f"method.name={method}")
    train(tiny_cfg(tmp_path / "a", *common, epochs=4))
    reference = load_checkpoint(tmp_path / "a" / "run" / "last.pt")

    original = Trainer.train_one_epoch

    def dies_in_epoch_3(self, epoch, num_epochs):
        if epoch == 2:
            raise _Killed()
        return original(self, epoch, num_epochs)

    monkeypatch.setattr(Trainer, "train_one_epoch", dies_in_epoch_3)
    with pytest.raises(_Killed):
        train(tiny_cfg(tmp_path / "b", *common, epochs=4))
    monkeypatch.setattr(Trainer, "train_one_epoch", original)
    run_b = tmp_path / "b" / "run"
    assert load_checkpoint(run_b)["epoch"] == 2
    cfg = resolution.resolve(None, [f"resume={run_b}", "train.progress=false"], extra=config.load_yaml(run_b / "config.yaml"))
    train(cfg)
    resumed = load_checkpoint(run_b / "last.pt")
    assert resumed["epoch"] == 4
    for k, v in reference["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, rtol=0, atol=0, msg=k)
    epochs = [json.loads(l)["epoch"] for l in (run_b / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt_mod.save_checkpoint({"epoch": 1, "model": {}, "config": {}}, path)

    def dies_mid_write(obj, f):
        f.write(b"partial bytes")
        raise _Killed()

    monkeypatch.setattr(ckpt_mod.torch, "save", dies_mid_write)
    with pytest.raises(_Killed):
        ckpt_mod.save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"], "no temporary file left behind"


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 1.*optim.lr"):
        train(tiny_cfg(tmp_path, "optim.lr=1e6", "optim.weight_decay=1e6", "train.log_every=1", epochs=1))


def test_eval_writes_its_own_file_with_shot_accuracy_and_leaves_results_json(tmp_path, capsys):
    train(tiny_cfg(tmp_path, "train.max_steps_per_epoch=2", epochs=1))
    run = tmp_path / "run"
    training_results = (run / "results.json").read_bytes()
    res = evaluate_checkpoint(run, which="best")
    saved = json.loads((run / "eval-best-test.json").read_text())
    assert saved["top1"] == res["top1"] and saved["checkpoint"] == "best.pt"
    assert len(saved["per_class"]) == 10 and saved["train_counts"][0] == 130
    assert "many" in capsys.readouterr().out
    assert (run / "results.json").read_bytes() == training_results, "what training wrote is never rewritten"


def test_cli_train_and_eval(tmp_path, capsys):
    run = tmp_path / "cli"
    rc = main(["train", f"run_dir={run}", "train.epochs=1", "train.max_steps_per_epoch=2", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "embedded default" in out and "few" in out
    assert main(["eval", str(run / "last.pt")]) == 0
    assert json.loads((run / "results.json").read_text())["epoch"] == 1


def test_cli_unknown_key_exits_2_naming_key(tmp_path, capsys):
    assert main(["train", "optim.lrr=0.1"]) == 2
    assert "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)" in capsys.readouterr().err


def test_cli_missing_config_file(capsys):
    assert main(["train", "configs/nope.yaml"]) == 2
    assert "config file not found: configs/nope.yaml" in capsys.readouterr().err


def test_cli_options_may_come_between_overrides(tmp_path):
    run = tmp_path / "mixed"
    assert main(["train", "train.epochs=1", "--no-progress", "train.max_steps_per_epoch=1", f"run_dir={run}"]) == 0
    assert (run / "last.pt").is_file()


@pytest.mark.slow
def test_bench_prints_ratio_and_a_json_line_with_the_contract_keys(capsys):
    from tailcon.cli import embedded_config_path

    rc = main(["bench", str(embedded_config_path()), "--steps", "2", "--warmup", "1", "--json",
               "data.batch_size=32"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    for key in ("images_per_s", "reference_images_per_s", "ratio", "peak_memory_mb"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["ratio"] == pytest.approx(result["images_per_s"] / result["reference_images_per_s"])
    assert result["pipeline"] == "device" and any("ratio:" in line for line in lines)


def test_device_pipeline_is_refused_with_a_reason_where_it_cannot_apply(tmp_path):
    cfg = tiny_cfg(tmp_path, "method.name=dscl", "data.pipeline=device", "method.queue_size=64",
                   "method.patch_size=8", "method.stage=pretrain")
    with pytest.raises(config.ConfigError, match="dscl.*own per-image views"):
        Trainer.from_config(cfg)


def test_the_checkpoint_picked_on_val_has_its_test_figures_and_evaluations_are_timed(tmp_path):
    res = train(tiny_cfg(tmp_path, "train.max_steps_per_epoch=3", epochs=3))
    best = res["best"]
    assert best["selected_on"] == "val" and set(best["test"]) == {"top1", "many", "medium", "few", "top5", "ece"}
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["eval_time_s"] > 0 for r in records)
    assert records[best["epoch"] - 1]["test"] == best["test"], "the test figures of that very epoch"


def test_in_memory_evaluation_on_the_device_predicts_as_the_per_image_path(tmp_path):
    from tailcon.engine.evaluation import predict_dataset

    cfg = tiny_cfg(tmp_path, "train.max_steps_per_epoch=4", epochs=2)
    train(cfg)
    trainer = Trainer.from_config(resolution.resolve(None, [f"resume={tmp_path / 'run'}"], extra=config.load_yaml(tmp_path / "run" / "config.yaml")),
                      resume_from=load_checkpoint(tmp_path / "run"))
    per_image = predict_dataset(trainer.method, trainer.data.test, trainer.cfg, trainer.device)
    on_device = predict_dataset(trainer.method, trainer.data.test, trainer.cfg, trainer.device, info=trainer.data.info)
    assert torch.equal(per_image.labels, on_device.labels)
    agree = (per_image.classes == on_device.classes).float().mean().item()
    assert agree >= 299 / 300, f"only float rounding may flip an argmax; agreement {agree:.4f}"
    images, _ = trainer.data.test.on_device(trainer.device)
    assert images.dtype == torch.uint8 and trainer.data.test.on_device(trainer.device)[0] is images, "uploaded once"


def test_a_run_names_the_schedule_switches_it_never_reaches_and_a_scaled_schedule(tmp_path, capsys):
    train(tiny_cfg(tmp_path, "optim.warmup_epochs=3", "train.max_steps_per_epoch=1", epochs=1))
    out = capsys.readouterr().out
    assert "tailcon: warning: optim.warmup_epochs=3 is at or past the run's end (train.epochs=1)" in out
    assert "train.scale_schedule=true" in out
    cfg = resolution.resolve(embedded_config_path(), [f"run_dir={tmp_path / 'scaled'}", "train.epochs=3",
                                                      "train.scale_schedule=true", "train.progress=false",
                                                      "train.max_steps_per_epoch=1"])
    train(cfg)
    out = capsys.readouterr().out
    assert "schedule scaled from the recipe's 30 epochs to 3: optim.warmup_epochs 1, train.eval_every 1" in out
    assert "warning" not in out
    assert config.load_yaml(tmp_path / "scaled" / "config.yaml")["optim"]["warmup_epochs"] == 1
