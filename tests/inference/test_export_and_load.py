"""tailcon export: each format loads back and gives the logits of the run's own model; nothing is
overwritten silently; tailcon.load reads a safetensors export and never reads optimizer state."""

import json

import pytest
import torch
from PIL import Image

import tailcon
from tailcon.cli import main
from tailcon.engine import train
from tailcon.rundir import load_checkpoint

from conftest import tiny_cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    train(tiny_cfg(tmp, "model.backbone=resnet8", "method.name=logit_adjusted", "train.max_steps_per_epoch=4",
                   epochs=1))
    return tmp / "run"


def _images(n=7):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))  # digits: 16 px


@pytest.mark.parametrize("fmt", ["safetensors", "torchscript", "onnx", "pt2"])
def test_each_format_loads_back_with_the_runs_logits(run, tmp_path, fmt):
    if fmt == "safetensors":
        pytest.importorskip("safetensors")
    if fmt == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    from tailcon.inference import load_exported

    out = tmp_path / f"model.{fmt}"
    out = out.with_name({"safetensors": "m.safetensors", "torchscript": "m.torchscript.pt", "onnx": "m.onnx",
                         "pt2": "m.pt2"}[fmt])
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


@pytest.mark.parametrize("fmt, needs_trust", [("safetensors", False), ("onnx", False), ("torchscript", True),
                                              ("pt2", True)])
def test_tailcon_load_reads_every_export_and_runs_code_only_when_trusted(run, tmp_path, capsys, fmt, needs_trust):
    if fmt in ("safetensors", "onnx"):
        pytest.importorskip("safetensors" if fmt == "safetensors" else "onnxruntime")
    from tailcon.inference import SUFFIX, ExportError

    out = tmp_path / f"m{SUFFIX[fmt]}"
    assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
    x = torch.rand(3, 16, 16, 3).mul(255).to(torch.uint8).numpy()
    expected = tailcon.load(run, device="cpu")(list(x))
    if needs_trust:
        with pytest.raises(ExportError, match="can run code stored in it.*trust=True"):
            tailcon.load(out)
        capsys.readouterr()
        Image.fromarray(x[0]).save(tmp_path / "x.png")
        assert main(["predict", str(out), str(tmp_path / "x.png")]) == 2
        assert "predict --trust" in capsys.readouterr().err
        assert main(["predict", str(out), str(tmp_path / "x.png"), "--trust"]) == 0
    model = tailcon.load(out, device="cpu", trust=needs_trust)
    torch.testing.assert_close(model(list(x)), expected, rtol=1e-4, atol=1e-5)
    assert model.classes == tailcon.load(run).classes


def test_a_torchscript_file_named_like_a_checkpoint_is_refused_naming_what_to_do(run, tmp_path, capsys):
    out = tmp_path / "looks_like_a_checkpoint.pt"
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    assert main(["eval", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is a TorchScript export, not a checkpoint" in err and "trust=True" in err and "Traceback" not in err


def test_the_command_line_offers_every_export_format():
    from tailcon import cli
    from tailcon.inference import artifacts as export

    assert cli.EXPORT_FORMATS == export.FORMATS == tuple(export.SUFFIX)
