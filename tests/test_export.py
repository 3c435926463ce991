"""tailcon export: each format loads back and gives the logits of the run's own model; nothing is
overwritten silently; tailcon.load reads a safetensors export and never reads optimizer state."""

import json

import pytest
import torch

import tailcon
from tailcon.cli import main
from tailcon.engine import train
from tailcon.engine.rundir import load_checkpoint

from conftest import tiny_cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    train(tiny_cfg(tmp, "model.backbone=resnet8", "method.name=logit_adjusted", "train.max_steps_per_epoch=4",
                   epochs=1))
    return tmp / "run"


def _images(n=7):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))  # digits: 16 px


@pytest.mark.parametrize("fmt", ["safetensors", "torchscript", "onnx"])
def test_each_format_loads_back_with_the_runs_logits(run, tmp_path, fmt):
    if fmt == "safetensors":
        pytest.importorskip("safetensors")
    if fmt == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    from tailcon.export import load_exported

    out = tmp_path / f"model.{fmt}"
    out = out.with_name({"safetensors": "m.safetensors", "torchscript": "m.torchscript.pt", "onnx": "m.onnx"}[fmt])
    assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
    fn, meta = load_exported(out)
    reference = tailcon.load(run, device="cpu")
    x = _images()
    expected = reference.batch_logits((x - torch.tensor(meta["image_info"]["mean"]).view(1, 3, 1, 1))
                                      / torch.tensor(meta["image_info"]["std"]).view(1, 3, 1, 1))
    torch.testing.assert_close(fn(x), expected, rtol=1e-4, atol=1e-4)  # a batch size other than the traced one
    assert meta["classes"] == reference.classes and meta["method"] == "logit_adjusted"
    assert meta["image_info"]["size"] == 16 and "optimizer" not in json.dumps(meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name], "one self-contained file, nothing left beside it"


def test_export_never_overwrites_and_the_default_path_is_inside_the_run(run, capsys):
    pytest.importorskip("safetensors")
    assert main(["export", str(run), "--format", "safetensors"]) == 0
    target = run / "export" / "last.safetensors"
    assert target.is_file()
    before = target.read_bytes()
    assert main(["export", str(run), "--format", "safetensors"]) == 2
    assert "exists; nothing was written" in capsys.readouterr().err and target.read_bytes() == before
    assert main(["export", str(run), "--format", "safetensors", "--force"]) == 0
    predictor = tailcon.load(target, device="cpu")  # tailcon.load takes the export too
    from_run = tailcon.load(run, device="cpu")
    x = _images(3)
    torch.testing.assert_close(predictor.batch_logits(predictor.preprocess(list(x))),
                               from_run.batch_logits(from_run.preprocess(list(x))))


def test_loading_for_inference_maps_the_file_and_skips_the_optimizer(run, monkeypatch):
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real(*a, **k))
    ckpt = load_checkpoint(run, for_inference=True)
    assert "optimizer" not in ckpt and "model" in ckpt and calls[-1].get("mmap") is True
    tailcon.load(run, device="cpu")
    assert calls[-1].get("mmap") is True and calls[-1].get("weights_only") is True
    assert "optimizer" in load_checkpoint(run)  # resuming still gets it
