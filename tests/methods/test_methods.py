"""Every method trains end to end on the embedded data: two steps, finite loss, parameters move."""

import json
import math

import pytest
import torch

from tailcon.data import build_data
from tailcon.engine import Trainer, load_checkpoint, train
from tailcon.methods import METHODS, build_method, get_method

from conftest import tiny_cfg

TWO_STAGE = ("supcon", "dscl")
# crt trains a classifier on a frozen, trained backbone: tests/methods/test_baselines.py
SINGLE_STAGE = sorted(m for m in METHODS if m not in TWO_STAGE and m != "crt")
# method keys whose paper defaults do not fit 10 classes / 16x16 digits
FIT_DIGITS = {"rescom": ["method.k_neg=20"], "dscl": ["method.queue_size=64", "method.patch_size=8"],
              "ldam_drw": ["model.classifier=cosine"]}


@pytest.mark.parametrize("name", SINGLE_STAGE)
def test_two_steps_give_finite_losses_and_move_the_parameters(tmp_path, name):
    cfg = tiny_cfg(tmp_path, f"method.name={name}", "train.max_steps_per_epoch=2", "data.batch_size=32",
                   "train.log_every=1", *FIT_DIGITS.get(name, []), epochs=1)
    trainer = Trainer.from_config(cfg)
    before = {k: v.clone() for k, v in trainer.method.state_dict().items() if v.is_floating_point()}
    stats = trainer.train_one_epoch(0, 1)
    assert all(math.isfinite(v) for v in stats.values()) and stats["images"] == 64
    after = trainer.method.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("backbone.") for k in moved) and any(k.startswith("classifier.") for k in moved)


def _classes(data):
    return data.num_classes, data.cls_num_list


def test_bcl_uses_three_views_in_one_pass_and_c_centres(tmp_path):
    cfg = tiny_cfg(tmp_path, "method.name=bcl", "method.cl_views=sim-rand")
    data = build_data(cfg)
    method = get_method("bcl")(cfg, data.num_classes, data.cls_num_list)
    assert method.view_recipes() == ("autoaug_cutout", "randstack", "sim_cifar")
    centers = method.centers()
    assert centers.shape == (10, 128)
    torch.testing.assert_close(centers.norm(dim=1), torch.ones(10))
    calls = []
    method.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    x = [torch.randn(4, 3, 16, 16) for _ in range(3)]
    out = method.training_step(x, torch.tensor([0, 1, 2, 2]))
    assert calls == [12], "one backbone pass over all 3B images (BN statistics, spec 4.8.6)"
    expected = 2.0 * out["loss_ce"] + 0.6 * out["loss_con"]
    torch.testing.assert_close(out["loss"].detach(), expected)


def test_bcl_centres_get_gradient_through_the_classifier_weights(tmp_path):
    cfg = tiny_cfg(tmp_path, "method.name=bcl", "method.alpha=0.0")
    method = build_method(cfg, *_classes(build_data(cfg)))
    out = method.training_step([torch.randn(4, 3, 16, 16) for _ in range(3)], torch.tensor([0, 1, 2, 2]))
    out["loss"].backward()
    assert method.classifier.weight.grad.abs().sum() > 0, "contrastive loss reaches W through g"


def test_hybrid_curriculum_moves_from_features_to_classifier(tmp_path):
    cfg = tiny_cfg(tmp_path, "method.name=hybrid_sc")
    method = build_method(cfg, *_classes(build_data(cfg)))
    alphas = []
    for epoch in range(4):
        method.on_epoch_start(epoch, 4)
        alphas.append(float(method.alpha))
    assert alphas == [1.0, 1 - (1 / 4) ** 2, 1 - (2 / 4) ** 2, 1 - (3 / 4) ** 2]
    assert method.paired_batch() == ("class_balanced", ("crop_flip_gray",))


def test_hybrid_psc_prototypes_are_learnable(tmp_path):
    cfg = tiny_cfg(tmp_path, "method.name=hybrid_psc")
    method = build_method(cfg, *_classes(build_data(cfg)))
    method.on_epoch_start(0, 10)
    x = [torch.randn(4, 3, 16, 16) for _ in range(2)]
    out = method.training_step(x, torch.tensor([0, 1, 2, 2]), paired=([torch.randn(4, 3, 16, 16)], torch.tensor([3, 4, 5, 6])))
    out["loss"].backward()
    assert method.prototypes.grad.abs().sum() > 0


def test_supcon_two_stages_chain_in_one_command_and_freeze_the_backbone(tmp_path):
    cfg = tiny_cfg(tmp_path, "method.name=supcon", "method.linear_epochs=1", "train.max_steps_per_epoch=2", epochs=1)
    res = train(cfg)
    run = tmp_path / "run"
    assert json.loads((run / "stages.json").read_text()) == ["pretrain", "linear"]
    pre, lin = load_checkpoint(run / "pretrain" / "last.pt"), load_checkpoint(run / "linear" / "last.pt")
    for k, v in pre["model"].items():
        if k.startswith("backbone."):
            torch.testing.assert_close(lin["model"][k], v, rtol=0, atol=0, msg=k)
    assert not torch.equal(pre["model"]["classifier.weight"], lin["model"]["classifier.weight"])
    assert (run / "results.json").is_file() and res["epoch"] == 1
    assert not (run / "pretrain" / "results.json").exists(), "a pre-training stage reports no accuracy"


def test_rescom_step_pushes_view1_projections_into_the_queue(tmp_path):
    cfg = tiny_cfg(tmp_path, "method.name=rescom", "method.k_neg=20")
    method = build_method(cfg, *_classes(build_data(cfg)))
    before = method.queue.keys.clone()
    labels = torch.tensor([0, 0, 3, 5])
    out = method.training_step([torch.randn(4, 3, 16, 16) for _ in range(2)], labels)
    assert torch.isfinite(out["loss"])
    assert method.queue.ptr.tolist() == [2, 0, 0, 1, 0, 1, 0, 0, 0, 0]
    changed = (method.queue.keys != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [0, 1, 30, 50]
    out["loss"].backward()  # the in-place queue update does not break autograd
    short = method.training_step([torch.randn(3, 3, 16, 16) for _ in range(2)], torch.tensor([1, 2, 2]))
    assert torch.isfinite(short["loss"]), "a smaller last batch needs no fixed-size buffer"


def test_rescom_k_neg_beyond_the_queue_is_a_clear_config_error(tmp_path):
    cfg = tiny_cfg(tmp_path, "method.name=rescom", "method.k_neg=400")
    with pytest.raises(ValueError, match="method.k_neg=400 exceeds the 90 negatives"):
        build_method(cfg, *_classes(build_data(cfg)))


def test_dscl_stage1_two_steps_update_encoder_key_encoder_and_queue(tmp_path):
    cfg = tiny_cfg(tmp_path, "method.name=dscl", "method.stage=pretrain", "method.queue_size=48",
                   "method.patch_size=8", "train.max_steps_per_epoch=2", "data.batch_size=16", epochs=1)
    trainer = Trainer.from_config(cfg)
    m = trainer.method
    key_before = {k: v.clone() for k, v in m.key_encoder.encoder.state_dict().items()}
    online_before = {k: v.clone() for k, v in m.encoder.state_dict().items()}
    stats = trainer.train_one_epoch(0, 1)
    assert math.isfinite(stats["loss_dscl"]) and math.isfinite(stats["loss_pbsd"])
    assert int(m.queue.ptr) == 32 and (m.queue.labels[:32] >= 0).all() and (m.queue.labels[32:] == -1).all()
    moved = lambda before, mod: [k for k, v in mod.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("head.") for k in moved(online_before, m.encoder))
    assert any(k.startswith("backbone.") for k in moved(key_before, m.key_encoder.encoder)), "EMA update"
    assert not any(p.requires_grad for p in m.key_encoder.parameters())


def test_momentum_update_is_the_ema_of_parameters():
    from tailcon.memory import MomentumEncoder

    online = torch.nn.Linear(3, 2)
    ema = MomentumEncoder(online, momentum=0.9)
    start = ema.encoder.weight.clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    ema.update(online)
    torch.testing.assert_close(ema.encoder.weight, 0.9 * start + 0.1 * online.weight)


def test_patch_boxes_address_the_pixels_of_their_patches():
    """The teacher's ROI box and the student's patch must show the same region of the query crop."""
    import numpy as np
    from PIL import Image
    from torchvision import transforms as T

    from tailcon.data import ImageInfo
    from tailcon.data.patches import PatchViews

    info = ImageInfo(size=32, mean=(0, 0, 0), std=(1, 1, 1), small=True)
    views = PatchViews(info, num_patches=4, patch_size=8)
    views.query_tail = T.ToTensor()  # no colour change, so pixels can be compared
    views.patch_tail = T.ToTensor()
    views.crop = T.Lambda(lambda im: im)  # the crop is the whole image
    ramp = np.tile(np.arange(32, dtype=np.uint8)[None, :, None] * 8, (32, 1, 3))  # x-ramp: flips are visible
    q, _, patches, boxes = views(Image.fromarray(ramp))
    for patch, (x1, y1, x2, y2) in zip(patches, boxes.long().tolist()):
        region = q[:, y1:y2, x1:x2][None]
        expected = torch.nn.functional.interpolate(region, size=(8, 8), mode="bilinear", antialias=True)[0]
        assert (patch - expected).abs().mean() < 0.05


def test_paco_step_moves_the_key_encoder_before_the_keys_and_enqueues_them_with_labels(tmp_path):
    cfg = tiny_cfg(tmp_path, "method.name=paco", "method.queue_size=64", "data.batch_size=16")
    method = build_method(cfg, *_classes(build_data(cfg)))
    assert method.queue.keys.norm(dim=0).allclose(torch.ones(32)), "the authors' queue: unit columns"
    views = [torch.randn(16, 3, 16, 16), torch.randn(16, 3, 16, 16)]
    labels = torch.arange(16) % 10
    with torch.no_grad():
        method.encoder.head.net[0].weight.add_(1.0)  # the online encoder moved since the last update
    key_head = method.key_encoder.encoder.head.net[0].weight.clone()
    method.training_step(views, labels)["loss"].backward()
    moved = method.key_encoder.encoder.head.net[0].weight
    torch.testing.assert_close(moved, 0.999 * key_head + 0.001 * method.encoder.head.net[0].weight.detach())
    assert torch.equal(method.queue.labels[:16], labels) and int(method.queue.ptr) == 16
    with torch.no_grad():
        keys = method.key_encoder(views[1])[1]
    torch.testing.assert_close(method.queue.keys[:16], keys)


def test_gpaco_anchors_both_views_without_a_momentum_encoder(tmp_path):
    cfg = tiny_cfg(tmp_path, "method.name=gpaco", "method.queue_size=64")
    method = build_method(cfg, *_classes(build_data(cfg)))
    assert not hasattr(method, "key_encoder")
    views = [torch.randn(8, 3, 16, 16, requires_grad=True), torch.randn(8, 3, 16, 16, requires_grad=True)]
    method.training_step(views, torch.arange(8))["loss"].backward()
    assert views[0].grad.abs().sum() > 0 and views[1].grad.abs().sum() > 0, "both views get gradients"
    assert not method.queue.keys.requires_grad and int(method.queue.ptr) == 8


def test_proco_epoch_start_hands_the_epochs_moments_to_old_and_resets_new(tmp_path):
    cfg = tiny_cfg(tmp_path, "method.name=proco")
    method = build_method(cfg, *_classes(build_data(cfg)))
    views = [torch.randn(12, 3, 16, 16) for _ in range(3)]
    labels = torch.arange(12) % 10
    method.training_step(views, labels)
    assert torch.equal(method.new_amount, method.old_amount) and method.new_amount.sum() == 24, "2 updates of 12"
    seen = method.new_ave.clone()
    method.on_epoch_start(1, 2)
    assert torch.equal(method.old_ave, seen) and method.new_amount.sum() == 0
    torch.testing.assert_close(method.new_ave.norm(dim=1), torch.full((10,), 0.9))
    assert {"old_ave", "old_amount", "new_ave", "new_amount"} <= set(method.state_dict()), "saved: resume is exact"


def test_paco_trains_without_a_queue(tmp_path):
    cfg = tiny_cfg(tmp_path, "method.name=paco", "method.queue_size=0")
    method = build_method(cfg, *_classes(build_data(cfg)))
    loss = method.training_step([torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)], torch.arange(8))["loss"]
    assert torch.isfinite(loss) and method.queue.keys.shape == (0, 32)


def test_bcl_scl_ablation_uses_the_plain_supcon_loss_on_the_same_features(tmp_path):
    from tailcon.losses import supcon_loss

    cfg = tiny_cfg(tmp_path, "method.name=bcl", "method.contrastive_loss=supcon")
    method = build_method(cfg, *_classes(build_data(cfg)))
    assert method.has_unused_parameters, "the centre head gets no gradient: DDP must know"
    torch.manual_seed(0)
    views, labels = [torch.randn(8, 3, 16, 16) for _ in range(3)], torch.arange(8) % 3
    method.train()
    out = method.training_step(views, labels)
    feats = method.backbone(torch.cat(views))
    z = method.head(feats)[8:]
    want = supcon_loss(torch.stack(z.split(8), dim=1), labels, 0.1)
    torch.testing.assert_close(out["loss_con"], want.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("separate", [False, True])
def test_hybrid_runs_its_two_batches_in_one_or_two_backbone_passes(tmp_path, separate, monkeypatch):
    cfg = tiny_cfg(tmp_path, "method.name=hybrid_sc", f"method.separate_forward={str(separate).lower()}")
    method = build_method(cfg, *_classes(build_data(cfg)))
    calls = []
    original = type(method.backbone).forward
    monkeypatch.setattr(type(method.backbone), "forward", lambda self, x: calls.append(len(x)) or original(self, x))
    views, ce = [torch.randn(4, 3, 16, 16)] * 2, [torch.randn(4, 3, 16, 16)]
    out = method.training_step(views, torch.arange(4), paired=(ce, torch.arange(4)))
    assert torch.isfinite(out["loss"]) and calls == ([8, 4] if separate else [12])
