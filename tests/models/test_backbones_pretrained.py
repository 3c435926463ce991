"""timm backbones (model.backbone=timm:<name>) and model.pretrained: weights from torchvision,
timm, safetensors files and tailcon runs land in the backbone (and in a momentum key encoder
copied from it); the old classifier is skipped, shape mismatches name the key."""

import pytest
import torch

from tailcon import config, resolution
from tailcon.engine import Trainer, train
from tailcon.methods import build_method
from tailcon.models import PretrainedError, build_backbone, load_pretrained

from conftest import tiny_cfg



def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_timm_model_trains_as_a_backbone_through_its_public_interface(tmp_path):
    pytest.importorskip("timm", reason="timm is an optional extra: pip install 'tailcon[timm]'")
    backbone = build_backbone("timm:test_resnet")
    x = torch.rand(3, 3, 16, 16)
    m = backbone.model
    torch.testing.assert_close(backbone(x), m.forward_head(m.forward_features(x), pre_logits=True))
    assert backbone.num_features == m.num_features == backbone(x).shape[1]
    res = train(tiny_cfg(tmp_path, "model.backbone=timm:test_resnet", "train.max_steps_per_epoch=2",
                         "train.channels_last=false", epochs=1))
    assert res["top1"] is not None
    with pytest.raises(config.ConfigError, match="did you mean"):
        resolution.resolve(None, ["model.backbone=timm:test_resnett"])


def test_timm_weights_load_with_the_classifier_skipped(tmp_path):
    timm = pytest.importorskip("timm", reason="timm is an optional extra: pip install 'tailcon[timm]'")
    source = timm.create_model("test_resnet", pretrained=False, num_classes=7)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    backbone = build_backbone("timm:test_resnet")
    report = load_pretrained(backbone, tmp_path / "w.pth", log=lambda *_: None)
    assert report["skipped"] and all(k.startswith(("fc.", "head.")) for k in report["skipped"])
    assert not report["unexpected"] and not report["missing"]
    x = torch.rand(2, 3, 16, 16)
    source.eval(), backbone.eval()
    torch.testing.assert_close(backbone(x), source.forward_head(source.forward_features(x), pre_logits=True))


def test_torchvision_state_dict_under_ddp_prefix_and_safetensors(tmp_path):
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "tv.pth")
    backbone = build_backbone("resnet50")
    report = load_pretrained(backbone, tmp_path / "tv.pth", log=lambda *_: None)
    assert sorted(report["skipped"]) == ["fc.bias", "fc.weight"] and not report["missing"]
    net.fc = torch.nn.Identity()
    assert _same(backbone, net)
    st = pytest.importorskip("safetensors.torch")
    small = build_backbone("resnet8")
    st.save_file(small.state_dict(), str(tmp_path / "w.safetensors"))
    fresh = build_backbone("resnet8")
    load_pretrained(fresh, tmp_path / "w.safetensors", log=lambda *_: None)
    assert _same(fresh, small)


def test_a_shape_mismatch_names_the_key_and_nothing_fitting_is_an_error(tmp_path):
    state = build_backbone("resnet8").state_dict()
    key = next(k for k in state if k.endswith("conv1.weight"))
    state[key] = torch.zeros(3, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(PretrainedError, match=key.replace(".", r"\.")):
        load_pretrained(build_backbone("resnet8"), tmp_path / "bad.pth", log=lambda *_: None)
    torch.save({"other.weight": torch.zeros(2)}, tmp_path / "foreign.pth")
    with pytest.raises(PretrainedError, match="none of its 1 keys"):
        load_pretrained(build_backbone("resnet8"), tmp_path / "foreign.pth", log=lambda *_: None)
    with pytest.raises(PretrainedError, match="no such file"):
        load_pretrained(build_backbone("resnet8"), tmp_path / "missing.pth")


def test_a_tailcon_run_starts_a_new_run_and_its_momentum_encoder(tmp_path):
    train(tiny_cfg(tmp_path / "a", "model.backbone=resnet8", "train.max_steps_per_epoch=2", epochs=1))
    run = tmp_path / "a" / "run"
    from tailcon.rundir import load_checkpoint

    trained = {k[len("backbone."):]: v for k, v in load_checkpoint(run)["model"].items() if k.startswith("backbone.")}
    cfg = tiny_cfg(tmp_path / "b", "method.name=paco", "method.queue_size=64", "model.backbone=resnet8",
                   f"model.pretrained={run}")
    method = build_method(cfg, 10, [50] * 10, load_pretrained=True)
    for name, value in trained.items():
        assert torch.equal(method.backbone.state_dict()[name], value), name
        assert torch.equal(method.key_encoder.encoder.backbone.state_dict()[name], value), name
    untouched = build_method(cfg, 10, [50] * 10)  # loading a checkpoint: its own weights, the file is not read
    assert not torch.equal(untouched.backbone.state_dict()["conv1.weight"], trained["conv1.weight"])


def test_places_lt_refuses_to_train_without_its_pretrained_weights(tmp_path):
    cfg = resolution.resolve("places_lt/rescom")
    assert cfg["model"]["require_pretrained"] and cfg["model"]["pretrained"] is None
    with pytest.raises(config.ConfigError, match="model.pretrained=PATH"):
        Trainer.from_config(tiny_cfg(tmp_path, "model.require_pretrained=true"))
