"""Models, augmentation recipes and samplers."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from tailcon.data import EpochSampler, ImageInfo, build_train_transform, build_view
from tailcon.data.randaugment import OPS, RandAugment
from tailcon.data.transforms import RECIPES, Cutout
from tailcon.config import ConfigError
from tailcon.models import CosineClassifier, ProjectionMLP, build_backbone, build_classifier


def test_resnet32_is_the_cifar_variant():
    net = build_backbone("resnet32")
    n_params = sum(p.numel() for p in net.parameters())
    assert 0.45e6 < n_params < 0.48e6  # ResNet-32 on CIFAR has about 0.46M parameters
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 64) and net.num_features == 64


def test_resnet50_feature_is_2048d():
    net = build_backbone("resnet50")
    assert net.num_features == 2048 and isinstance(net.fc, torch.nn.Identity)


@pytest.mark.parametrize("name", ["resnet8", "resnext50_32x4d", "timm:resnet18"])
def test_every_backbone_has_the_same_feature_api(name):
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    net = build_backbone(name).eval()
    x = torch.randn(2, 3, 64, 64)
    fmap = net.forward_features(x)
    assert fmap.ndim == 4 and fmap.shape[1] == net.num_features
    assert torch.allclose(net(x), fmap.mean(dim=(2, 3)), atol=1e-5), "forward = the pooled feature map"
    assert not hasattr(net, "out_dim"), "one name for the feature size: num_features"


def test_torchvision_backbones_keep_torchvision_parameter_names():
    import torchvision

    ours = build_backbone("resnet50").state_dict()
    theirs = torchvision.models.resnet50(weights=None).state_dict()
    assert list(ours) == [k for k in theirs if not k.startswith("fc.")], "ImageNet weights load key for key"


def test_unknown_backbone_is_an_error():
    with pytest.raises(ValueError, match="unknown model.backbone 'resnet33'"):
        build_backbone("resnet33")


def test_cosine_classifier_is_scaled_cosine_with_unit_columns():
    clf = CosineClassifier(8, 5, scale=30.0)
    assert clf.weight.shape == (8, 5)
    torch.testing.assert_close(clf.weight.norm(dim=0), torch.ones(5))
    x = torch.randn(3, 8)
    logits = clf(x)
    assert logits.abs().max() <= 30.0 + 1e-5
    torch.testing.assert_close(clf(10 * x), logits)


def test_projection_mlp_outputs_unit_vectors():
    z = ProjectionMLP(64, 512, 128, batch_norm=True)(torch.randn(4, 64))
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4))


def _img(size=32):
    return Image.fromarray(np.random.RandomState(0).randint(0, 255, (size, size, 3), dtype=np.uint8))


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_gives_a_normalised_tensor_of_the_crop_size(recipe):
    info = ImageInfo(size=32, mean=(0.5,) * 3, std=(0.25,) * 3, small=recipe not in ("randcls", "randstack"))
    x = build_view(recipe, info)(_img(40))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32


def test_multiview_returns_one_tensor_per_recipe_with_independent_draws():
    info = ImageInfo(size=32, mean=(0,) * 3, std=(1,) * 3, small=True)
    views = build_train_transform(["autoaug_cutout", "sim_cifar", "sim_cifar"], info)(_img())
    assert len(views) == 3 and not torch.equal(views[1], views[2])


def test_cutout_zeroes_one_clipped_16px_box():
    random.seed(0)
    out = Cutout(16)(torch.ones(3, 32, 32))
    zeros = (out == 0).all(dim=0)
    rows, cols = zeros.any(dim=1).sum().item(), zeros.any(dim=0).sum().item()
    assert 8 <= rows <= 16 and 8 <= cols <= 16 and zeros.sum() == rows * cols


@pytest.mark.parametrize("name", sorted(OPS))
def test_each_randaugment_op_runs_at_full_magnitude(name):
    out = OPS[name](_img(), 10.0)
    assert out.size == (32, 32) and out.mode == "RGB"


def test_randaugment_changes_some_images():
    random.seed(1)
    img = _img()
    changed = sum(not np.array_equal(np.asarray(RandAugment()(img)), np.asarray(img)) for _ in range(20))
    assert 5 < changed <= 20  # each of 2 ops fires with p = 0.5 (some ops can be no-ops)


def test_class_balanced_sampler_draws_classes_uniformly():
    targets = np.repeat(np.arange(4), [1000, 100, 10, 1])
    s = EpochSampler(targets, "class_balanced", seed=0, num_samples=20000)
    drawn = np.bincount(targets[list(iter(s))], minlength=4) / 20000
    np.testing.assert_allclose(drawn, 0.25, atol=0.02)


def test_sqrt_sampler_follows_square_root_counts():
    targets = np.repeat(np.arange(2), [900, 100])
    s = EpochSampler(targets, "sqrt", seed=0, num_samples=20000)
    drawn = np.bincount(targets[list(iter(s))], minlength=2) / 20000
    np.testing.assert_allclose(drawn, [0.75, 0.25], atol=0.02)


def test_instance_sampler_is_a_permutation_fixed_by_seed_and_epoch():
    s = EpochSampler(np.arange(50) % 3, "instance", seed=3)
    s.set_epoch(1)
    a = list(iter(s))
    s.set_epoch(2)
    b = list(iter(s))
    s.set_epoch(1)
    assert sorted(a) == list(range(50)) and a != b and list(iter(s)) == a


def test_kaiming_normal_classifier_init_draws_the_ldam_codes_weight_distribution():
    # LDAM-DRW's CIFAR ResNet applies kaiming_normal_ (fan-in, gain sqrt 2) to every Linear, the
    # classifier included: std sqrt(2 / 64) = 0.177, against nn.Linear's uniform bound 1 / 8 (std 0.072)
    torch.manual_seed(0)
    kaiming = torch.stack([build_classifier("linear", 64, 100, init="kaiming_normal").weight for _ in range(20)])
    plain = torch.stack([build_classifier("linear", 64, 100).weight for _ in range(20)])
    assert abs(kaiming.std().item() - (2 / 64) ** 0.5) < 0.005
    assert abs(plain.std().item() - (1 / 8) / 3 ** 0.5) < 0.003 and plain.abs().max() <= 1 / 8
    with pytest.raises(ConfigError, match="model.classifier_init"):
        build_classifier("linear", 64, 10, init="xavier")


def test_the_ldam_code_based_baselines_start_their_classifier_as_that_code_does():
    from tailcon import resolution

    for name in ("cifar10_lt/ce", "cifar100_lt/ce", "cifar10_lt/logit_adjusted", "cifar10_lt/class_balanced",
                 "cifar10_lt/balanced_softmax", "cifar10_lt/ce_if50"):
        assert resolution.resolve(name)["model"]["classifier_init"] == "kaiming_normal", name
    assert resolution.resolve("digits_lt")["model"]["classifier_init"] == "torch"
