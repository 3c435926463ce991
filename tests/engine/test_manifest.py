"""manifest.json: versions, command, host, times and a training-data fingerprint per run; a resume
appends a session; tailcon compare warns when a table mixes training sets."""

import json

from tailcon.engine import train
from tailcon.tools.compare import compare

from conftest import tiny_cfg

KEYS = {"tailcon", "git", "python", "torch", "torchvision", "cuda", "cudnn", "device", "device_names", "world_size",
        "command", "host", "start_time", "end_time", "data_fingerprint", "sessions"}


def _manifest(run_dir):
    return json.loads((run_dir / "manifest.json").read_text())


def test_a_run_records_what_produced_it_and_a_resume_adds_a_session(tmp_path):
    cfg = tiny_cfg(tmp_path, "model.backbone=resnet8", epochs=1)
    train(cfg)
    m = _manifest(tmp_path / "run")
    assert KEYS <= set(m) and m["end_time"] and m["world_size"] == 1
    fp = m["data_fingerprint"]
    assert fp["num_samples"] == sum(fp["class_counts"]) and len(fp["samples_sha256"]) == 64
    if m["git"] is not None:  # run from a checkout
        assert len(m["git"]["commit"]) == 40 and isinstance(m["git"]["dirty"], bool)
    train(tiny_cfg(tmp_path, "model.backbone=resnet8", f"resume={tmp_path / 'run'}", epochs=2))
    again = _manifest(tmp_path / "run")
    assert len(again["sessions"]) == 2 and again["start_time"] == m["start_time"]
    assert again["sessions"][1]["end_time"] and again["data_fingerprint"] == fp


def test_the_fingerprint_follows_the_samples_not_the_seed(tmp_path):
    fps = {}
    for name, extra in {"a": ["seed=0"], "b": ["seed=1"], "c": ["data.subset_seed=1"]}.items():
        train(tiny_cfg(tmp_path / name, "model.backbone=resnet8", "train.max_steps_per_epoch=1", *extra, epochs=1))
        fps[name] = _manifest(tmp_path / name / "run")["data_fingerprint"]["samples_sha256"]
    assert fps["a"] == fps["b"] != fps["c"]


def test_compare_warns_when_its_runs_trained_on_different_data(tmp_path, capsys):
    from tailcon.cli import embedded_config_path

    for name, subset in (("one", 0), ("two", 1)):
        (tmp_path / f"{name}.yaml").write_text(f"_base_: {embedded_config_path()}\ndata:\n  subset_seed: {subset}\n")
    compare([str(tmp_path / "one.yaml"), str(tmp_path / "two.yaml")], [0],
            ["train.epochs=1", "train.max_steps_per_epoch=1", "train.progress=false", "model.backbone=resnet8"],
            tmp_path / "cmp")
    assert "different training sets" in (tmp_path / "cmp" / "compare.md").read_text()
    assert "different training sets" in capsys.readouterr().err
