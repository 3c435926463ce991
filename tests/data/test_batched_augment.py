"""The batched on-device augmentations against the per-image reference ops.

Same parameters -> same pixels as torchvision's functional ops (float images; uint8-only ops
within one level), and the per-sample parameter distributions match the reference transforms
over a few thousand draws.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms.autoaugment import _apply_op

from tailcon.data import batched_ops as B
from tailcon.data import cifar10_policy as POLICY
from tailcon.data.batched_augment import (BATCHED_RECIPES, OP, AutoAugment, BatchedView, ColorJitter, RandAugment,
                                          apply_op_slot, resized_crop_boxes)
from tailcon.data.randaugment import OPS as PIL_RAND_OPS
from tailcon.data.transforms import CIFAR_MEAN, CIFAR_STD, RECIPES, ImageInfo

INFO = ImageInfo(32, CIFAR_MEAN, CIFAR_STD, True)


def images(n=6, size=32, seed=0) -> torch.Tensor:
    """Smooth random images (gradients + blobs), so interpolation differences stay small."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 5, 5, generator=g)
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def test_pad_crop_equals_pad_then_crop():
    x = images()
    top, left = torch.tensor([0, 8, 3, 5, 1, 7]), torch.tensor([8, 0, 4, 2, 6, 0])
    out = B.pad_crop(x, top, left, 4)
    for i in range(len(x)):
        ref = TF.crop(TF.pad(x[i], [4]), int(top[i]), int(left[i]), 32, 32)
        assert torch.equal(out[i], ref)


def test_hflip_only_where_drawn():
    x = images()
    mask = torch.tensor([True, False, True, False, False, True])
    out = B.hflip(x, mask)
    for i in range(len(x)):
        assert torch.equal(out[i], TF.hflip(x[i]) if mask[i] else x[i])


@pytest.mark.parametrize("box", [(0, 0, 32, 32), (3, 5, 17, 23), (10, 2, 9, 30), (0, 12, 32, 20), (30, 30, 2, 2)])
def test_resized_crop_equals_crop_then_bilinear_resize(box):
    x = images(1)
    out = B.resized_crop(x, torch.tensor([box]), 32)
    ref = TF.resized_crop(x[0], *box, [32, 32], antialias=False)
    torch.testing.assert_close(out[0], ref, atol=1e-5, rtol=0)


def test_resized_crop_close_to_pil_reference():
    img = (images(1)[0] * 255).round().byte()
    pil = TF.to_pil_image(img)
    box = (4, 6, 20, 18)
    ref = TF.to_tensor(TF.resized_crop(pil, *box, [32, 32]))
    out = B.resized_crop(img.float().unsqueeze(0) / 255, torch.tensor([box]), 32)[0]
    assert (out - ref).abs().mean() < 2 / 255  # PIL's fixed-point bilinear, same geometry


@pytest.mark.parametrize("name,fn,ref,values", [
    ("brightness", B.adjust_brightness, TF.adjust_brightness, [0.6, 1.0, 1.37]),
    ("contrast", B.adjust_contrast, TF.adjust_contrast, [0.6, 1.0, 1.4]),
    ("saturation", B.adjust_saturation, TF.adjust_saturation, [0.0, 0.7, 1.4]),
    ("hue", B.adjust_hue, TF.adjust_hue, [-0.1, 0.0, 0.07]),
    ("sharpness", B.adjust_sharpness, TF.adjust_sharpness, [0.1, 1.0, 1.9]),
])
def test_colour_ops_equal_torchvision(name, fn, ref, values):
    x = images(len(values))
    out = fn(x, torch.tensor(values))
    for i, v in enumerate(values):
        torch.testing.assert_close(out[i], ref(x[i], v), atol=2e-6, rtol=0)


def test_color_jitter_applies_each_samples_own_order():
    x = images(3)
    factors = torch.tensor([[1.3, 0.7, 1.2, 0.05], [0.8, 1.4, 0.6, -0.08], [1.1, 1.1, 0.0, 0.1]])
    order = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]])
    out = B.color_jitter(x, factors, order)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in range(3):
        ref = x[i]
        for k in order[i].tolist():
            ref = ops[k](ref, float(factors[i, k]))
        torch.testing.assert_close(out[i], ref, atol=2e-6, rtol=0)


def test_gaussian_blur_equals_torchvision():
    x = images(3)
    sigma = torch.tensor([0.1, 0.9, 2.0])
    out = B.gaussian_blur(x, sigma, 13)
    for i in range(3):
        ref = TF.gaussian_blur(x[i], [13, 13], [float(sigma[i])] * 2)
        torch.testing.assert_close(out[i], ref, atol=1e-6, rtol=0)


def test_gaussian_blur_close_to_pil_blur():
    from PIL import ImageFilter
    img = (images(1)[0] * 255).round().byte()
    pil = TF.to_pil_image(img).filter(ImageFilter.GaussianBlur(radius=1.5))
    out = B.gaussian_blur(img.float().unsqueeze(0) / 255, torch.tensor([1.5]), 13)[0]
    assert (out - TF.to_tensor(pil)).abs().mean() < 2 / 255  # PIL approximates with box filters


def test_cutout_zeroes_the_clipped_box():
    x = images(2) + 0.01
    out = B.cutout(x, torch.tensor([0, 20]), torch.tensor([31, 5]), 16)
    expect = x.clone()
    expect[0, :, 0:8, 23:32] = 0
    expect[1, :, 12:28, 0:13] = 0
    assert torch.equal(out, expect)


# ---- AutoAugment / RandAugment ops ------------------------------------------------------------
FILL = [128 / 255] * 3


@pytest.mark.parametrize("name,mag", [
    ("ShearX", 0.2), ("ShearY", -0.25), ("TranslateX", 9.7), ("TranslateY", -7.0), ("Rotate", 23.0),
    ("Rotate", -10.0), ("Brightness", 0.5), ("Color", -0.6), ("Contrast", 0.3), ("Sharpness", -0.9),
    ("Solarize", 140.0), ("AutoContrast", 0.0), ("Invert", 0.0),
])
def test_autoaugment_float_ops_equal_torchvision(name, mag):
    x = (images(2) * 255).round() / 255  # uint8 levels, as decoded images hold
    ops = torch.tensor([OP[name], OP["Identity"]])
    out = apply_op_slot(x, ops, torch.tensor([mag, mag]), FILL)
    if name == "Solarize":  # torchvision thresholds float images in [0, 1] units
        ref = TF.solarize(x[0], mag / 255)
    else:
        mag = float(torch.tensor(mag))  # AutoAugment's magnitudes are float32 bins read with .item()
        ref = _apply_op(x[0], name, mag, interpolation=T.InterpolationMode.NEAREST, fill=FILL)
    torch.testing.assert_close(out[0], ref, atol=2e-6, rtol=0)
    assert torch.equal(out[1], x[1])  # the identity row is untouched


@pytest.mark.parametrize("name,mag", [("Posterize", 3.0), ("Posterize", 6.0), ("Equalize", 0.0),
                                      ("Solarize", 200.0), ("AutoContrast", 0.0)])
def test_autoaugment_uint8_ops_equal_torchvision(name, mag):
    x8 = (images(1)[0] * 200 + 20).round().byte()
    out = apply_op_slot(x8.float().unsqueeze(0) / 255, torch.tensor([OP[name]]), torch.tensor([mag]), FILL)[0]
    ref = _apply_op(x8, name, mag, interpolation=T.InterpolationMode.NEAREST, fill=None)
    assert ((out * 255).round() - ref.float()).abs().max() <= 1


@pytest.mark.parametrize("name", ["AutoContrast", "Equalize", "Invert", "PosterizeTpu", "Solarize", "SolarizeAdd",
                                  "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
                                  "TranslateXRel", "TranslateYRel", "Rotate"])
def test_randaugment_ops_close_to_pil_reference(name):
    from tailcon.data.batched_augment import RAND_OPS
    x8 = (images(1)[0] * 200 + 20).round().byte()
    pil = TF.to_pil_image(x8)
    m = 7.0
    random.seed(0)  # the PIL op's own coin flips: sign first, then the resampling filter
    negative = random.random() < 0.5
    random.seed(0)
    ref = TF.to_tensor(PIL_RAND_OPS[name](pil, m))
    target, to_arg = RAND_OPS[name]
    arg = to_arg(torch.tensor([m]), 32, 32)
    if name in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel") and negative:
        arg = -arg
    bicubic = torch.tensor([False])
    out = apply_op_slot(x8.float().unsqueeze(0) / 255, torch.tensor([OP[target]]), arg,
                        [124 / 255, 116 / 255, 104 / 255], bicubic=bicubic)[0]
    geometric = name in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
    # PIL rounds each op to uint8 and resamples in fixed point; geometric ops may pick bicubic
    assert (out - ref).abs().mean() < (6 if geometric else 1.5) / 255, name


# ---- parameter distributions -----------------------------------------------------------------
def _ecdf_gap(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


@pytest.mark.parametrize("size,scale", [(32, (0.2, 1.0)), (32, (0.08, 1.0)), (24, (0.08, 1.0))])
def test_resized_crop_box_distribution_matches_torchvision(size, scale):
    n = 4000
    boxes = resized_crop_boxes(n, size, size, scale, (3 / 4, 4 / 3), torch.Generator().manual_seed(1), "cpu")
    torch.manual_seed(2)
    img = torch.zeros(3, size, size)
    ref = np.array([T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3]) for _ in range(n)])
    mine = boxes.numpy()
    for col in range(4):  # top, left, height, width
        assert _ecdf_gap(mine[:, col].astype(float), ref[:, col].astype(float)) < 0.05, col
    area = mine[:, 2] * mine[:, 3] / size**2
    ref_area = ref[:, 2] * ref[:, 3] / size**2
    assert _ecdf_gap(area, ref_area) < 0.05
    assert _ecdf_gap(np.log(mine[:, 3] / mine[:, 2]), np.log(ref[:, 3] / ref[:, 2])) < 0.05
    assert (mine[:, 0] + mine[:, 2] <= size).all() and (mine[:, 1] + mine[:, 3] <= size).all()


def test_coin_rates_match_the_recipe_probabilities():
    n, g = 20000, torch.Generator().manual_seed(3)
    view = BatchedView("sim_cifar", INFO)
    rates = {type(s).__name__: s.draw(n, g, "cpu", 32, 32) for s in view.steps}
    assert abs(rates["HFlip"]["flip"].float().mean() - 0.5) < 0.02
    assert abs(rates["ColorJitter"]["apply"].float().mean() - 0.8) < 0.02
    assert abs(rates["Grayscale"]["gray"].float().mean() - 0.2) < 0.02
    assert abs(rates["GaussianBlur"]["blur"].float().mean() - 0.5) < 0.02
    f = rates["ColorJitter"]["factors"]
    assert f[:, :3].min() >= 0.6 and f[:, :3].max() <= 1.4 and f[:, 3].abs().max() <= 0.1
    assert abs(f[:, 0].mean() - 1.0) < 0.01 and abs(f[:, 3].mean()) < 0.003
    order = rates["ColorJitter"]["order"]
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(n, 4))  # a permutation per sample
    first = torch.bincount(order[:, 0], minlength=4).float() / n
    assert (first - 0.25).abs().max() < 0.02  # each op is first a quarter of the time, as randperm(4)


def test_autoaugment_op_frequencies_match_the_policy():
    n = 20000
    aa = AutoAugment()
    p = aa.draw(n, torch.Generator().manual_seed(4), "cpu", 32, 32)
    expected = torch.zeros(len(OP))
    for sub in aa.reference.policies:
        for name, prob, _ in sub:
            expected[OP[name]] += prob / len(aa.reference.policies) / 2
    expected[OP["Identity"]] = 1 - expected.sum()
    observed = torch.bincount(p["op"].flatten(), minlength=len(OP)).float() / (2 * n)
    assert (observed - expected).abs().max() < 0.01


def test_randaugment_magnitude_and_rate():
    n = 20000
    ra = RandAugment()
    p = ra.draw(n, torch.Generator().manual_seed(5), "cpu", 32, 32)
    fired = p["op"] != OP["Identity"]
    assert abs(fired.float().mean() - 0.5) < 0.01
    rot = p["op"] == OP["Rotate"]
    angles = p["mag"][rot].abs()
    assert angles.max() <= 30 and abs(float(angles.mean()) - 30 * (10 - 0.5 * math.sqrt(2 / math.pi) / 2) / 10) < 0.3
    assert abs((p["mag"][rot] < 0).float().mean() - 0.5) < 0.05


def test_every_reference_recipe_has_a_batched_version():
    assert set(BATCHED_RECIPES) == set(RECIPES)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_each_sample_gets_its_own_draw(recipe):
    x = images(1).expand(16, 3, 32, 32).contiguous()  # the same image 16 times
    out = BatchedView(recipe, INFO)(x, torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all() and out.shape == x.shape
    distinct = {out[i].numpy().tobytes() for i in range(16)}
    assert len(distinct) >= 8, recipe


def test_a_rank_slice_equals_the_slice_of_the_global_batch():
    x = images(8)
    view = BatchedView("autoaug_cutout", INFO)
    full = view(x, torch.Generator().manual_seed(9))
    part = view(x[4:], torch.Generator().manual_seed(9), global_n=8, offset=4)
    torch.testing.assert_close(part, full[4:])


@pytest.mark.parametrize("box", [(0, 0, 96, 80), (10, 5, 70, 60), (3, 2, 50, 41)])
def test_downscaling_crops_antialias_as_torchvision_and_pil_do(box):
    x = torch.rand(1, 3, 96, 80, generator=torch.Generator().manual_seed(0))
    out = B.resized_crop(x, torch.tensor([box]), 32)[0]
    torch.testing.assert_close(out, TF.resized_crop(x[0], *box, [32, 32], antialias=True), atol=1e-5, rtol=0)
    aliased = TF.resized_crop(x[0], *box, [32, 32], antialias=False)
    assert (out - aliased).abs().max() > 0.05, "plain bilinear sampling would alias here"
    img = (x[0] * 255).round().byte()
    pil = TF.to_tensor(TF.resized_crop(TF.to_pil_image(img), *box, [32, 32]))
    ours = B.resized_crop(img.float().unsqueeze(0) / 255, torch.tensor([box]), 32)[0]
    assert (ours - pil).abs().mean() < 1 / 255  # PIL's fixed-point arithmetic, same filter


def test_crops_of_a_padded_batch_read_only_their_own_image():
    big, small = torch.rand(3, 60, 50), torch.rand(3, 20, 30)
    padded = torch.zeros(2, 3, 60, 50)
    padded[0], padded[1, :, :20, :30] = big, small
    boxes = torch.tensor([[5, 4, 50, 40], [0, 0, 20, 30]])
    out = B.resized_crop(padded, boxes, 16)
    torch.testing.assert_close(out[1], TF.resized_crop(small, 0, 0, 20, 30, [16, 16], antialias=True), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0], TF.resized_crop(big, 5, 4, 50, 40, [16, 16], antialias=True), atol=1e-5, rtol=0)


# ---- CIFAR10Policy (ResCom / PaCo flavour of the CIFAR-10 AutoAugment policy) ------------------
_POLICY_CASES = sorted({(name, index, sign) for sub in POLICY.SUB_POLICIES for name, _, index in sub
                        for sign in ((1, -1) if name in POLICY.SIGNED else (1,))})


@pytest.mark.parametrize("name,index,sign", _POLICY_CASES)
def test_cifar10_policy_ops_close_to_the_pil_reference(name, index, sign):
    P = POLICY
    x8 = (images(1, seed=index)[0] * 200 + 20).round().byte()
    m = sign * P.magnitude(name, index)
    ref = TF.to_tensor(P.apply_op(TF.to_pil_image(x8), name, m))
    arg = -m * 32 if name in ("TranslateX", "TranslateY") else m  # PIL moves the content by -t
    out = apply_op_slot(x8.float().unsqueeze(0) / 255, torch.tensor([OP[name]]), torch.tensor([arg]),
                        [128 / 255] * 3, bicubic_shear=True)[0]
    geometric = name in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
    # PIL resamples in fixed point with its own bicubic kernel and rounds every op to uint8
    assert (out - ref).abs().mean() < (6 if geometric else 1.5) / 255, (name, index, sign)


def test_cifar10_policy_rotates_one_way_shears_both_ways_and_solarize_bin0_is_identity():
    from tailcon.data import cifar10_policy as P
    from tailcon.data.batched_augment import CIFAR10Policy
    p = CIFAR10Policy().draw(20000, torch.Generator().manual_seed(6), "cpu", 32, 32)
    op, mag = p["op"].flatten(), p["mag"].flatten()
    assert (mag[op == OP["Rotate"]] > 0).all()  # torchvision's policy: either way
    for signed in ("ShearY", "TranslateX", "TranslateY", "Color", "Brightness"):
        drawn = mag[(op == OP[signed]) & (mag != 0)]  # bin 0 has no sign to show
        assert abs(float((drawn < 0).float().mean()) - 0.5) < 0.06, signed
    assert float(mag[op == OP["TranslateY"]].abs().max()) == pytest.approx(150 / 331 * 32)
    assert P.magnitude("Solarize", 0) == 256 and [P.magnitude("Posterize", i) for i in range(10)] == \
        [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    x8 = (images(1)[0] * 255).round().byte()
    x8[0, 0, 0] = 255
    assert torch.equal(TF.pil_to_tensor(P.apply_op(TF.to_pil_image(x8), "Solarize", 256.0)), x8)
    expected = torch.zeros(len(OP))
    for sub in P.SUB_POLICIES:
        for name, prob, _ in sub:
            expected[OP[name]] += prob / len(P.SUB_POLICIES) / 2
    expected[OP["Identity"]] = 1 - expected.sum()
    assert (torch.bincount(op, minlength=len(OP)).float() / len(op) - expected).abs().max() < 0.01


def test_pil_cifar10_policy_rotation_has_no_random_sign(monkeypatch):
    from tailcon.data import cifar10_policy as P
    monkeypatch.setattr(P, "SUB_POLICIES", ((("Rotate", 1.0, 9), ("Rotate", 0.0, 0)),))
    img = TF.to_pil_image((images(1)[0] * 255).round().byte())
    outs = set()
    for seed in range(8):
        random.seed(seed)
        outs.add(TF.pil_to_tensor(P.CIFAR10Policy()(img)).numpy().tobytes())
    assert outs == {TF.pil_to_tensor(img.rotate(30.0, fillcolor=P.FILL)).numpy().tobytes()}
