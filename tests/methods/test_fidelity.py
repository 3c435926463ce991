"""Where a step-by-step comparison with the authors' code found tailcon computing something else:
each behaviour pinned to theirs."""

import copy
import math

import pytest
import torch

from tailcon.engine import Trainer
from tailcon.losses.proco import miller_log_ive, proco_logits, vmf_kappa
from tailcon.methods import METHODS

from conftest import tiny_cfg
from test_methods import FIT_DIGITS


def _to_double(x):
    if torch.is_tensor(x):
        return x.double() if x.is_floating_point() else x
    if isinstance(x, (list, tuple)):
        return type(x)(_to_double(v) for v in x)
    if isinstance(x, dict):
        return {k: _to_double(v) for k, v in x.items()}
    return x


@pytest.mark.parametrize("name", sorted(m for m in METHODS if m != "crt"))
def test_a_float64_training_step_stays_float64_end_to_end(tmp_path, name):
    cfg = tiny_cfg(tmp_path, f"method.name={name}", "data.batch_size=16", "train.amp=none",
                   "train.channels_last=false", *FIT_DIGITS.get(name, []), epochs=1)
    trainer = Trainer.from_config(cfg)
    views, labels, extra = next(iter(trainer.batches()))
    method = trainer.method.double()
    seen = []
    for module_name, module in method.named_modules():
        module.register_forward_hook(lambda m, i, o, n=module_name: seen.extend(
            (n, t.dtype) for t in (o if isinstance(o, (tuple, list)) else [o]) if torch.is_tensor(t)
            and t.is_floating_point()))
    losses = method.training_step(_to_double(views), labels, **_to_double(extra))
    assert {k: v.dtype for k, v in losses.items()} == {k: torch.float64 for k in losses}
    narrowed = [(n, d) for n, d in seen if d != torch.float64]
    assert not narrowed, f"cast below float64 in {narrowed[:5]}"


def test_proco_head_normalises_over_all_three_views_as_the_authors_model(tmp_path):
    cfg = tiny_cfg(tmp_path, "method.name=proco", "data.batch_size=16", "train.channels_last=false", epochs=1)
    trainer = Trainer.from_config(cfg)
    views, labels, _ = next(iter(trainer.batches()))
    method = trainer.method
    reference = copy.deepcopy(method)
    method.training_step(views, labels)
    reference.head(reference.backbone(torch.cat(views)))  # the head on the concatenation of the three views
    for key in ("running_mean", "running_var"):
        bn = [m for m in method.head.modules() if isinstance(m, torch.nn.BatchNorm1d)][0]
        bn_ref = [m for m in reference.head.modules() if isinstance(m, torch.nn.BatchNorm1d)][0]
        torch.testing.assert_close(getattr(bn, key), getattr(bn_ref, key), rtol=0, atol=0)


def test_proco_bessel_routine_runs_in_float64_for_float32_inputs():
    torch.manual_seed(0)
    dim, classes = 128, 6
    z = torch.nn.functional.normalize(torch.randn(8, dim), dim=1)
    ave = 0.3 * torch.nn.functional.normalize(torch.randn(classes, dim), dim=1)
    ave[0] = 1e-4 * ave[0] / ave[0].norm()  # kappa_0 ~ 0.013, so kappa_tilde_i0 ~ ||z_i|| / tau = 3.25
    tau = 1 / 3.25  # (D = 128: float32 Miller then rescales at iteration nu, float64 never)
    kappa, logc = vmf_kappa(ave, dim)
    assert kappa.dtype == logc.dtype == torch.float64
    logits = proco_logits(z, ave, kappa, logc, temperature=tau)
    assert logits.dtype == torch.float32
    kt = (kappa.float()[None, :, None] * torch.nn.functional.normalize(ave, dim=1)[None] + z[:, None] / tau).norm(dim=2)
    assert 3.2 < kt.min() < 3.3, "the case that makes float32 Miller rescale at another iteration"
    # the float64 reference on the same kappa_tilde: equal to float32 rounding of the result
    half = dim / 2 - 1
    k = kt.double()
    reference = miller_log_ive(math.trunc(half), k)[0] + k - half * torch.log(k + 1e-20) - logc
    torch.testing.assert_close(logits.double(), reference, rtol=1e-6, atol=1e-9)
    in_float32 = miller_log_ive(math.trunc(half), kt)[0].double() + k - half * torch.log(k + 1e-20) - logc
    assert (in_float32 - reference).abs().max() > 1.0, "float32 would have shifted the whole batch"


def _bn_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 5), torch.nn.BatchNorm1d(5))


def test_bn_batch_normalises_each_images_group_as_the_authors_per_gpu_batches():
    from tailcon.models.grouped_bn import convert_grouped_batchnorm, images_per_view

    images, group, views = 8, 4, 2  # 2 "GPUs" of 4 images, each image in 2 views
    x = torch.randn(views * images, 3, 8, 8)
    net, reference = _bn_net(), _bn_net()
    convert_grouped_batchnorm(net, group)
    with images_per_view(images):
        out = net(x).unflatten(0, (views, images))
    per_gpu = x.unflatten(0, (views, images))
    for k in range(images // group):  # each GPU's batch: its images in every view
        alone = copy.deepcopy(reference)(per_gpu[:, k * group:(k + 1) * group].flatten(0, 1))
        torch.testing.assert_close(out[:, k * group:(k + 1) * group].flatten(0, 1), alone)
    reference(per_gpu[:, :group].flatten(0, 1))  # the kept running statistics: the first GPU's (rank 0)
    for a, b in zip(net.modules(), reference.modules()):
        if isinstance(b, torch.nn.modules.batchnorm._BatchNorm):
            torch.testing.assert_close(a.running_mean, b.running_mean)
            torch.testing.assert_close(a.running_var, b.running_var)
            assert int(a.num_batches_tracked) == int(b.num_batches_tracked) == 1
    out.sum().backward()  # gradients flow through every group
    assert all(p.grad is not None for p in net.parameters())


def test_bn_batch_data_parallel_layout_cuts_contiguous_chunks():
    from tailcon.models.grouped_bn import convert_grouped_batchnorm, images_per_view

    x = torch.randn(3 * 8, 3, 8, 8)  # 3 views of 8 images, scattered over 2 devices as DataParallel does
    net, reference = _bn_net(), _bn_net()
    convert_grouped_batchnorm(net, 4, layout="data_parallel")
    with images_per_view(8):
        out = net(x)
    for k, chunk in enumerate(x.split(12)):
        torch.testing.assert_close(out[k * 12:(k + 1) * 12], copy.deepcopy(reference)(chunk))


def test_bn_batch_leaves_evaluation_and_other_row_counts_alone():
    from tailcon.models.grouped_bn import convert_grouped_batchnorm, images_per_view

    x = torch.randn(10, 3, 8, 8)
    net, reference = _bn_net(), _bn_net()
    convert_grouped_batchnorm(net, 4)
    with images_per_view(8):  # 10 rows are not views of 8 images (e.g. BCL's class centres)
        torch.testing.assert_close(net(x), reference(x))
    net.eval(), reference.eval()
    torch.testing.assert_close(net(x), reference(x))
    assert set(net.state_dict()) == set(reference.state_dict()), "checkpoints keep their keys"


def test_bn_batch_in_training_and_its_config_checks(tmp_path):
    from tailcon import config, resolution

    with pytest.raises(config.ConfigError, match="must divide each process's batch"):
        tiny_cfg(tmp_path, "model.bn_batch=12", "data.batch_size=32")
    with pytest.raises(config.ConfigError, match="exclude each other"):
        tiny_cfg(tmp_path, "model.bn_batch=16", "model.sync_bn=true")
    cfg = tiny_cfg(tmp_path, "method.name=bcl", "model.bn_batch=8", "data.batch_size=16", "train.channels_last=false",
                   "train.max_steps_per_epoch=1", epochs=1)
    trainer = Trainer.from_config(cfg)
    grouped = [m for m in trainer.method.modules() if type(m).__name__.startswith("Grouped")]
    assert grouped and all(m.group_size == 8 for m in grouped)
    assert not any(type(m).__name__.startswith("Grouped") for m in trainer.method.center_head.modules()), \
        "modules fed the same rows on every device (BCL's class centres) keep ordinary BatchNorm"
    assert math.isfinite(trainer.train_one_epoch(0, 1)["loss"])


def test_trainable_last_block_trains_only_the_last_block_and_the_heads(tmp_path):
    from tailcon.models.trainable import last_block

    cfg = tiny_cfg(tmp_path, "method.name=paco", "model.trainable=last_block", "data.batch_size=16",
                   "train.max_steps_per_epoch=2", "method.queue_size=32", epochs=1)
    trainer = Trainer.from_config(cfg)
    method = trainer.method
    before = {k: v.clone() for k, v in method.state_dict().items()}
    trainer.train_one_epoch(0, 1)
    after = method.state_dict()
    block_ids = {id(p) for p in last_block(method.backbone).parameters()}
    block = {f"backbone.{n}" for n, p in method.backbone.named_parameters() if id(p) in block_ids}
    for name, p in method.backbone.named_parameters():
        assert p.requires_grad == (f"backbone.{name}" in block), name
        if not p.requires_grad:
            assert torch.equal(before[f"backbone.{name}"], after[f"backbone.{name}"]), f"{name} is frozen"
    assert method.encoder.head.net[0].weight.requires_grad, "the projection head trains"
    assert any(not torch.equal(before[n], after[n]) for n in block), "the last block trains"
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])


def test_dscl_stage_two_scales_the_bn_group_with_its_batch_on_the_same_gpus(tmp_path):
    from tailcon import config, resolution
    from tailcon.methods import get_method

    cfg = resolution.resolve("imagenet_lt/dscl", [f"run_dir={tmp_path / 'run'}"])
    assert cfg["model"]["bn_batch"] == 128  # 2 GPUs x 128
    (_, pretrain), (_, linear) = get_method("dscl").stages(cfg)
    assert "model" not in pretrain
    assert linear["data"]["batch_size"] == 2048 and linear["model"]["bn_batch"] == 1024  # 2 GPUs x 1024



def _shipped():
    from tailcon import config, resolution

    return {name: resolution.resolve(name) for name in config.shipped_config_names() if "/" in name}


def test_reproduction_configs_follow_the_audited_recipes():
    configs = _shipped()
    amp = {name: cfg["train"]["amp"] for name, cfg in configs.items()}
    assert amp.pop("places_lt/rescom") == "fp16", "the Places scripts train in fp16"
    assert set(amp.values()) == {"none"}, "the authors train in fp32"
    gpaco = {n: c for n, c in configs.items() if c["method"]["name"] == "gpaco"}
    assert len(gpaco) == 7 and all(c["method"]["separate_forward"] for c in gpaco.values()), "two forward passes"
    for ds in ("cifar10_lt", "cifar100_lt"):
        assert configs[f"{ds}/proco"]["method"]["cls_view"] == "policy_cutout"
        for imb in (50, 10):
            c = configs[f"{ds}/gpaco_if{imb}"]
            assert c["optim"]["lr"] == 0.05 and c["data"]["imbalance_factor"] == imb
    assert configs["inat2018/rescom"]["optim"]["weight_decay"] == 1e-4
    assert configs["imagenet_lt/rescom"]["train"]["eval_every"] == 1
    places = configs["places_lt/rescom"]
    assert (places["train"]["epochs"], places["optim"]["lr"], places["data"]["batch_size"],
            places["optim"]["warmup_epochs"], places["model"]["trainable"]) == (30, 0.02, 128, 5, "last_block")
    assert {n: c["model"]["bn_batch"] for n, c in configs.items() if c["model"]["bn_batch"]} == {
        "imagenet_lt/paco": 32, "imagenet_lt/gpaco": 32, "imagenet_lt/proco": 32, "imagenet_lt/dscl": 128,
        "imagenet_lt/bcl": 64, "imagenet_lt/bcl_resnext50": 64, "inat2018/bcl": 64}


def _grouped_forward(rank, world, x, group):
    from tailcon.models.grouped_bn import convert_grouped_batchnorm, images_per_view

    net = convert_grouped_batchnorm(_bn_net(), group)
    share = x.shape[0] // world  # this rank's contiguous share of the global batch (one view)
    mine = x[rank * share:(rank + 1) * share].clone().requires_grad_(True)
    with images_per_view(share):
        out = net(mine)
    out.pow(2).sum().backward()
    bn = net[1]
    return out.detach(), mine.grad, bn.running_mean.clone(), bn.running_var.clone()


@pytest.mark.slow
def test_bn_batch_groups_are_the_same_on_one_process_and_on_two(tmp_path):
    from ddp_utils import run_ddp

    torch.manual_seed(0)
    x = torch.randn(16, 3, 8, 8)
    alone = _grouped_forward(0, 1, x, 4)
    ranks = run_ddp(_grouped_forward, x, 4, tmp_path=tmp_path)
    torch.testing.assert_close(torch.cat([r[0] for r in ranks]), alone[0])  # every image normalised with its group
    torch.testing.assert_close(torch.cat([r[1] for r in ranks]), alone[1])
    torch.testing.assert_close(ranks[0][2], alone[2])  # rank 0 (whose checkpoint is saved) keeps group 0's statistics
    torch.testing.assert_close(ranks[0][3], alone[3])
