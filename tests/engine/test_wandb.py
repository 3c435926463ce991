"""train.wandb: the epoch records go to Weights & Biases as well (a stub records the calls; the
real package in offline mode writes under RUN_DIR/wandb without network); a resume continues the
same W&B run; without the package the error says how to install it."""

import sys
import types

import pytest

from tailcon import config, resolution
from tailcon.engine import train

from conftest import tiny_cfg


class _StubRun:
    def __init__(self, calls):
        self.calls = calls

    def log(self, data, step):
        self.calls.append(("log", step, data))

    def finish(self):
        self.calls.append(("finish",))


def _stub(calls):
    wandb = types.ModuleType("wandb")
    wandb.init = lambda **kw: calls.append(("init", kw)) or _StubRun(calls)
    return wandb


def test_epochs_are_logged_to_wandb_and_a_resume_continues_the_same_run(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "wandb", _stub(calls))
    over = ["train.wandb.project=lt", "train.wandb.mode=offline", "train.max_steps_per_epoch=2"]
    train(tiny_cfg(tmp_path, *over, epochs=1))
    init = calls[0][1]
    assert init["project"] == "lt" and init["mode"] == "offline" and len(init["id"]) == 12
    assert init["config"]["method"]["name"] and init["dir"] == str(tmp_path / "run")
    logs = [c for c in calls if c[0] == "log"]
    assert logs[0][1] == 1 and "loss" in logs[0][2] and "test/top1" in logs[0][2] and "val/ece/overall" in logs[0][2]
    assert calls[-1] == ("finish",)
    calls.clear()
    train(tiny_cfg(tmp_path, *over, f"resume={tmp_path / 'run'}", epochs=2))
    assert calls[0][1]["id"] == init["id"] and calls[0][1]["resume"] == "allow"
    assert [c[1] for c in calls if c[0] == "log"] == [2]


def test_offline_mode_of_the_real_package_writes_under_the_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(tiny_cfg(tmp_path, "train.wandb.project=lt", "train.wandb.mode=offline", "train.max_steps_per_epoch=1",
                   epochs=1))
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert runs and any(runs[0].glob("run-*.wandb"))


def test_wandb_settings_are_checked_and_a_missing_package_is_explained(tmp_path, monkeypatch):
    with pytest.raises(config.ConfigError, match="train.wandb.mode"):
        resolution.resolve(None, ["train.wandb.mode=sometimes"])
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails
    with pytest.raises(config.ConfigError, match='tailcon\\[wandb\\]'):
        train(tiny_cfg(tmp_path, "train.wandb.project=lt", "train.max_steps_per_epoch=1", epochs=1))
