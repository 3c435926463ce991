"""The augmentation recipes of :mod:`tailcon.data.transforms`, computed batched on the training
device with an independent random draw per sample.

A view is a list of *steps*. Each step draws its parameters for a whole (global) batch with one
``torch.Generator`` (``draw``) and applies them (``apply``); drawing for the global batch and
slicing out this rank's rows makes N DDP ranks augment exactly as one process would. The pixel
work is in :mod:`tailcon.data.batched_ops`; each step mirrors one torchvision/PIL transform
(same probability, same parameter distribution), which the tests check.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torchvision import transforms as T

from . import batched_ops
from . import cifar10_policy as P
from .transforms import ImageInfo
from ..config import ConfigError

Params = dict[str, torch.Tensor]


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def _coin(n: int, p: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) < p


class Step:
    """One transform: ``draw`` per-sample parameters for ``n`` images of size (h, w), ``apply``."""

    def draw(self, n: int, g: torch.Generator, device, h: int, w: int) -> Params:
        return {}

    def apply(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        raise NotImplementedError


class PadCrop(Step):
    """RandomCrop(size, padding) on an image of that size: offsets uniform in [0, 2 * padding]."""

    def __init__(self, padding: int):
        self.padding = padding

    def draw(self, n, g, device, h, w):
        hi = 2 * self.padding + 1
        return {"top": torch.randint(0, hi, (n,), generator=g, device=device),
                "left": torch.randint(0, hi, (n,), generator=g, device=device)}

    def apply(self, x, p):
        return batched_ops.pad_crop(x, p["top"], p["left"], self.padding)


class HFlip(Step):
    def __init__(self, p: float = 0.5):
        self.p = p

    def draw(self, n, g, device, h, w):
        return {"flip": _coin(n, self.p, g, device)}

    def apply(self, x, p):
        return batched_ops.hflip(x, p["flip"])


def draw_resized_crop(n: int, g: torch.Generator, device, attempts: int = 10) -> Params:
    """The uniforms RandomResizedCrop consumes per image: 10 tries of (area, log-ratio), position."""
    return {"u_area": torch.rand(n, attempts, generator=g, device=device),
            "u_ratio": torch.rand(n, attempts, generator=g, device=device),
            "u_pos": torch.rand(n, 2, generator=g, device=device)}


def boxes_from_draws(p: Params, h, w, scale: Sequence[float], ratio: Sequence[float]) -> torch.Tensor:
    """RandomResizedCrop.get_params, batched -> [n, 4] (top, left, height, width).

    ``h``, ``w``: ints or [n] tensors (images of different sizes in one padded batch). Per image:
    up to 10 tries of area ~ U(scale) * h * w and log-uniform aspect ratio; the first box that
    fits is used; if none fits, the whole image with the ratio clamped, centred."""
    u = p["u_area"]
    n = u.shape[0]
    hh = torch.as_tensor(h, device=u.device, dtype=u.dtype).expand(n).reshape(n, 1)
    ww = torch.as_tensor(w, device=u.device, dtype=u.dtype).expand(n).reshape(n, 1)
    target = hh * ww * (scale[0] + (scale[1] - scale[0]) * u)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * p["u_ratio"])
    cw = torch.round(torch.sqrt(target * aspect))
    ch = torch.round(torch.sqrt(target / aspect))
    ok = (cw > 0) & (cw <= ww) & (ch > 0) & (ch <= hh)
    first = torch.argmax(ok.int(), dim=1, keepdim=True)  # index of the first fitting try
    found = ok.any(dim=1)
    cw, ch = cw.gather(1, first).squeeze(1), ch.gather(1, first).squeeze(1)
    hh, ww = hh.squeeze(1), ww.squeeze(1)
    top = torch.floor(p["u_pos"][:, 0] * (hh - ch + 1)).clamp(max=hh - ch)
    left = torch.floor(p["u_pos"][:, 1] * (ww - cw + 1)).clamp(max=ww - cw)
    # the fallback: whole image, aspect ratio clamped into [min(ratio), max(ratio)]
    in_ratio = ww / hh
    fw = torch.where(in_ratio > max(ratio), torch.round(hh * max(ratio)), ww)
    fh = torch.where(in_ratio < min(ratio), torch.round(ww / min(ratio)), hh)
    fallback = torch.stack([torch.div(hh - fh, 2, rounding_mode="floor"),
                            torch.div(ww - fw, 2, rounding_mode="floor"), fh, fw], dim=1)
    boxes = torch.stack([top, left, ch, cw], dim=1)
    return torch.where(found.view(n, 1), boxes, fallback).long()


def resized_crop_boxes(n: int, h: int, w: int, scale: Sequence[float], ratio: Sequence[float],
                       g: torch.Generator, device) -> torch.Tensor:
    """Draw and compute ``n`` RandomResizedCrop boxes for h x w images."""
    return boxes_from_draws(draw_resized_crop(n, g, device), h, w, scale, ratio)


class ResizedCrop(Step):
    """RandomResizedCrop. The draws are uniforms, turned into boxes at ``apply`` time from each
    image's own size (``p["sizes"]`` [n, 2] for a padded batch of decoded photos)."""

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        self.size, self.scale, self.ratio = size, scale, ratio

    def draw(self, n, g, device, h, w):
        return draw_resized_crop(n, g, device)

    def apply(self, x, p):
        if "sizes" in p:
            h, w = p["sizes"][:, 0].float(), p["sizes"][:, 1].float()
        else:
            h, w = x.shape[-2:]
        return batched_ops.resized_crop(x, boxes_from_draws(p, h, w, self.scale, self.ratio), self.size)


class ColorJitter(Step):
    """RandomApply([ColorJitter(b, c, s, hue)], p): factors uniform in [1 - v, 1 + v], hue shift
    in [-hue, hue], the four ops in a random order drawn per sample."""

    def __init__(self, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p: float = 0.8):
        self.spread = (brightness, contrast, saturation)
        self.hue, self.p = hue, p

    def draw(self, n, g, device, h, w):
        factors = [_uniform(n, max(0.0, 1 - v), 1 + v, g, device) for v in self.spread]
        factors.append(_uniform(n, -self.hue, self.hue, g, device))
        order = torch.argsort(torch.rand(n, 4, generator=g, device=device), dim=1)
        return {"factors": torch.stack(factors, 1), "order": order, "apply": _coin(n, self.p, g, device)}

    def apply(self, x, p):
        return batched_ops.where_samples(p["apply"], batched_ops.color_jitter(x, p["factors"], p["order"]), x)


class Grayscale(Step):
    def __init__(self, p: float = 0.2):
        self.p = p

    def draw(self, n, g, device, h, w):
        return {"gray": _coin(n, self.p, g, device)}

    def apply(self, x, p):
        return batched_ops.where_samples(p["gray"], batched_ops.grayscale(x).expand_as(x), x)


class GaussianBlur(Step):
    """RandomApply([GaussianBlur(sigma ~ U(0.1, 2))], p): a Gaussian with that standard deviation
    (PIL's radius), truncated at 3 sigma of the largest sigma (or the image size)."""

    def __init__(self, sigma=(0.1, 2.0), p: float = 0.5):
        self.sigma, self.p = sigma, p

    def kernel_size(self, h: int, w: int) -> int:
        k = 2 * math.ceil(3 * self.sigma[1]) + 1
        return min(k, 2 * min(h, w) - 1)  # reflect padding needs k // 2 < the image side

    def draw(self, n, g, device, h, w):
        return {"sigma": _uniform(n, *self.sigma, g, device), "blur": _coin(n, self.p, g, device)}

    def apply(self, x, p):
        k = self.kernel_size(*x.shape[-2:])
        return batched_ops.where_samples(p["blur"], batched_ops.gaussian_blur(x, p["sigma"], k), x)


class Cutout(Step):
    def __init__(self, size: int):
        self.size = size

    def draw(self, n, g, device, h, w):
        return {"cy": torch.randint(0, h, (n,), generator=g, device=device),
                "cx": torch.randint(0, w, (n,), generator=g, device=device)}

    def apply(self, x, p):
        return batched_ops.cutout(x, p["cy"], p["cx"], self.size)


# ---- AutoAugment (torchvision's CIFAR-10 policy) and RandAugment (rand-n2-m10-mstd0.5) ---------
OP_NAMES = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
            "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert",
            "SolarizeAdd")
OP = {name: i for i, name in enumerate(OP_NAMES)}
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


def apply_op_slot(x: torch.Tensor, op: torch.Tensor, mag: torch.Tensor, fill: Sequence[float],
                  bicubic: torch.Tensor | None = None, bicubic_shear: bool = False) -> torch.Tensor:
    """Apply one operation per sample: ``op`` [B] indexes :data:`OP_NAMES`, ``mag`` [B] its
    argument in torchvision's AutoAugment units (shear: tan of the angle; translate: pixels,
    rotate: degrees counter-clockwise; enhance ops: factor - 1; posterize: bits kept;
    solarize: threshold level; SolarizeAdd: levels added).

    Resampling: nearest and whole-pixel shifts (torchvision's AutoAugment); ``bicubic`` [B]:
    bilinear or bicubic per sample, sub-pixel shifts (RandAugment); ``bicubic_shear``: shears
    bicubic, the rest nearest, sub-pixel shifts (CIFAR10Policy)."""
    b, _, h, w = x.shape
    is_op = {name: op == OP[name] for name in OP_NAMES}
    zero = torch.zeros_like(mag)
    shear = torch.stack([torch.where(is_op["ShearX"], batched_ops.shear_degrees(mag), zero),
                         torch.where(is_op["ShearY"], batched_ops.shear_degrees(mag), zero)], 1)
    # torchvision's AutoAugment: int(magnitude) pixels
    shift = torch.trunc(mag) if bicubic is None and not bicubic_shear else mag
    translate = torch.stack([torch.where(is_op["TranslateX"], shift, zero),
                             torch.where(is_op["TranslateY"], shift, zero)], 1)
    angle = torch.where(is_op["Rotate"], -mag, zero)  # F.rotate(img, a) inverts with -a
    sheared = is_op["ShearX"] | is_op["ShearY"]
    center = torch.stack([torch.where(sheared, zero - w * 0.5, zero), torch.where(sheared, zero - h * 0.5, zero)], 1)
    geometric = sheared | is_op["TranslateX"] | is_op["TranslateY"] | is_op["Rotate"]
    matrix = batched_ops.inverse_affine(angle, translate, shear, center)
    warped = batched_ops.warp_affine(x, matrix, fill, mode="nearest")
    if bicubic is not None:  # RandAugment: bilinear or bicubic per sample
        smooth = batched_ops.warp_affine(x, matrix, fill, mode="bilinear")
        cubic = batched_ops.warp_affine(x, matrix, fill, mode="bicubic").clamp(0, 1)
        warped = batched_ops.where_samples(bicubic, cubic, smooth)
    elif bicubic_shear:
        cubic = batched_ops.warp_affine(x, matrix, fill, mode="bicubic").clamp(0, 1)
        warped = batched_ops.where_samples(sheared, cubic, warped)
    x = batched_ops.where_samples(geometric, warped, x)
    one = torch.ones_like(mag)
    for name, fn in (("Brightness", batched_ops.adjust_brightness), ("Color", batched_ops.adjust_saturation),
                     ("Contrast", batched_ops.adjust_contrast), ("Sharpness", batched_ops.adjust_sharpness)):
        x = batched_ops.where_samples(is_op[name], fn(x, torch.where(is_op[name], one + mag, one)), x)
    x = batched_ops.where_samples(is_op["Posterize"], batched_ops.posterize(x, torch.where(is_op["Posterize"], mag, one * 8)), x)
    x = batched_ops.where_samples(is_op["Solarize"], batched_ops.solarize(x, torch.where(is_op["Solarize"], mag, one * 256)), x)
    x = batched_ops.where_samples(is_op["SolarizeAdd"], batched_ops.solarize_add(x, torch.where(is_op["SolarizeAdd"], mag, zero)), x)
    x = batched_ops.autocontrast(x, is_op["AutoContrast"])
    x = batched_ops.equalize(x, is_op["Equalize"])
    return batched_ops.invert(x, is_op["Invert"])


class AutoAugment(Step):
    """torchvision's AutoAugment (CIFAR-10 policy by default), one sub-policy drawn per sample;
    the policy table and magnitude bins are read from torchvision itself."""

    def __init__(self, policy: T.AutoAugmentPolicy = T.AutoAugmentPolicy.CIFAR10, fill=(128, 128, 128)):
        self.reference = T.AutoAugment(policy)
        self.fill = [f / 255 for f in fill]

    def tables(self, h: int, w: int, device) -> tuple[torch.Tensor, ...]:
        space = self.reference._augmentation_space(10, (h, w))
        ops, probs, mags, signed = [], [], [], []
        for sub in self.reference.policies:
            for name, prob, bin_ in sub:
                values, is_signed = space[name]
                ops.append(OP[name])
                probs.append(prob)
                mags.append(float(values[bin_]) if values.ndim > 0 else 0.0)
                signed.append(bool(is_signed))
        shape = (len(self.reference.policies), 2)
        return (torch.tensor(ops, device=device).view(shape), torch.tensor(probs, device=device).view(shape),
                torch.tensor(mags, device=device).view(shape), torch.tensor(signed, device=device).view(shape))

    def draw(self, n, g, device, h, w):
        ops, probs, mags, signed = self.tables(h, w, device)
        pid = torch.randint(0, len(ops), (n,), generator=g, device=device)
        u = torch.rand(n, 2, generator=g, device=device)
        negative = torch.randint(0, 2, (n, 2), generator=g, device=device) == 0
        fire = u <= probs[pid]
        mag = torch.where(signed[pid] & negative, -mags[pid], mags[pid])
        return {"op": torch.where(fire, ops[pid], torch.zeros_like(ops[pid])), "mag": mag}

    def apply(self, x, p):
        for slot in range(2):
            x = apply_op_slot(x, p["op"][:, slot], p["mag"][:, slot], self.fill)
        return x


class CIFAR10Policy(Step):
    """ResCom's / PaCo's "CIFAR10Policy" (:mod:`tailcon.data.cifar10_policy`, whose table and
    magnitudes it reads), one sub-policy drawn per sample: one-direction rotation, bicubic
    shears, sub-pixel translations, solarize from 256."""

    def __init__(self):
        self.fill = [v / 255 for v in P.FILL]

    def tables(self, h: int, w: int, device) -> tuple[torch.Tensor, ...]:
        ops, probs, mags, signed = [], [], [], []
        for sub in P.SUB_POLICIES:
            for name, prob, index in sub:
                m = P.magnitude(name, index)
                # PIL's translate reads the input at x + t (content moves by -t), apply_op_slot's moves
                # it by +t: negated, the same signed draw moves the content the same way
                m *= -w if name == "TranslateX" else -h if name == "TranslateY" else 1
                ops.append(OP[name])
                probs.append(prob)
                mags.append(m)
                signed.append(name in P.SIGNED)
        shape = (len(P.SUB_POLICIES), 2)
        return tuple(torch.tensor(v, device=device).view(shape) for v in (ops, probs, mags, signed))

    def draw(self, n, g, device, h, w):
        ops, probs, mags, signed = self.tables(h, w, device)
        pid = torch.randint(0, len(ops), (n,), generator=g, device=device)
        fire = torch.rand(n, 2, generator=g, device=device) < probs[pid]
        negative = torch.rand(n, 2, generator=g, device=device) < 0.5
        mag = torch.where(signed[pid] & negative, -mags[pid], mags[pid])
        return {"op": torch.where(fire, ops[pid], torch.zeros_like(ops[pid])), "mag": mag}

    def apply(self, x, p):
        for slot in range(2):
            x = apply_op_slot(x, p["op"][:, slot], p["mag"][:, slot], self.fill, bicubic_shear=True)
        return x


# tailcon.data.randaugment's ops in this module's units: name -> (op, magnitude m in [0, 10] -> argument)
RAND_OPS: dict[str, tuple[str, Callable[[torch.Tensor, int, int], torch.Tensor]]] = {
    "AutoContrast": ("AutoContrast", lambda m, h, w: m * 0),
    "Equalize": ("Equalize", lambda m, h, w: m * 0),
    "Invert": ("Invert", lambda m, h, w: m * 0),
    "Rotate": ("Rotate", lambda m, h, w: 30 * m / 10),
    "PosterizeTpu": ("Posterize", lambda m, h, w: torch.floor(4 * m / 10)),
    "Solarize": ("Solarize", lambda m, h, w: torch.floor(256 * m / 10)),
    "SolarizeAdd": ("SolarizeAdd", lambda m, h, w: torch.floor(110 * m / 10)),
    "Color": ("Color", lambda m, h, w: 1.8 * m / 10 - 0.9),  # PIL enhance 0.1 + 1.8 m / 10, minus 1
    "Contrast": ("Contrast", lambda m, h, w: 1.8 * m / 10 - 0.9),
    "Brightness": ("Brightness", lambda m, h, w: 1.8 * m / 10 - 0.9),
    "Sharpness": ("Sharpness", lambda m, h, w: 1.8 * m / 10 - 0.9),
    "ShearX": ("ShearX", lambda m, h, w: 0.3 * m / 10),
    "ShearY": ("ShearY", lambda m, h, w: 0.3 * m / 10),
    # PIL's translate moves content by -t pixels; the sign is random either way
    "TranslateXRel": ("TranslateX", lambda m, h, w: -0.45 * m / 10 * w),
    "TranslateYRel": ("TranslateY", lambda m, h, w: -0.45 * m / 10 * h),
}
SIGNED = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}


class RandAugment(Step):
    """Per sample ``num_ops`` ops drawn uniformly with replacement, each firing with ``prob``,
    magnitude ~ N(m, mstd) clipped to [0, 10], random sign for geometric ops, bilinear or bicubic
    resampling drawn per application (tailcon.data.randaugment, batched)."""

    def __init__(self, num_ops: int = 2, magnitude: float = 10.0, mstd: float = 0.5, prob: float = 0.5,
                 fill=(124, 116, 104)):
        self.num_ops, self.magnitude, self.mstd, self.prob = num_ops, magnitude, mstd, prob
        self.names = list(RAND_OPS)
        self.fill = [f / 255 for f in fill]

    def draw(self, n, g, device, h, w):
        k = self.num_ops
        which = torch.randint(0, len(self.names), (n, k), generator=g, device=device)
        fire = torch.rand(n, k, generator=g, device=device) < self.prob
        m = (self.magnitude + self.mstd * torch.randn(n, k, generator=g, device=device)).clamp(0, 10)
        negative = torch.rand(n, k, generator=g, device=device) < 0.5
        bicubic = torch.rand(n, k, generator=g, device=device) < 0.5
        op = torch.zeros(n, k, dtype=torch.long, device=device)
        arg = torch.zeros(n, k, device=device)
        for i, name in enumerate(self.names):  # a loop over the 15 op kinds, not over samples
            target, to_arg = RAND_OPS[name]
            chosen = which == i
            value = to_arg(m, h, w)
            if name in SIGNED:
                value = torch.where(negative, -value, value)
            op = torch.where(chosen & fire, torch.full_like(op, OP[target]), op)
            arg = torch.where(chosen, value, arg)
        return {"op": op, "mag": arg, "bicubic": bicubic}

    def apply(self, x, p):
        for slot in range(self.num_ops):
            x = apply_op_slot(x, p["op"][:, slot], p["mag"][:, slot], self.fill, bicubic=p["bicubic"][:, slot])
        return x


# ---- recipes ----------------------------------------------------------------------------------
def _crop(i: ImageInfo, scale=(0.08, 1.0)) -> list[Step]:
    return [PadCrop(max(1, i.size // 8))] if i.small else [ResizedCrop(i.size, scale)]


def _sim(i: ImageInfo, scale, blur: bool, blur_p: float = 0.5) -> list[Step]:
    steps = [ResizedCrop(i.size, scale), HFlip(), ColorJitter(), Grayscale(0.2)]
    return steps + [GaussianBlur(p=blur_p)] if blur else steps


BATCHED_RECIPES: dict[str, Callable[[ImageInfo], list[Step]]] = {
    "crop_flip": lambda i: _crop(i) + [HFlip()],
    "crop": lambda i: _crop(i),
    "crop_flip_gray": lambda i: _crop(i) + [HFlip(), Grayscale(0.2)],
    "autoaug_cutout": lambda i: _crop(i) + [HFlip(), AutoAugment(), Cutout(16 if i.size >= 32 else max(1, i.size // 2))],
    "policy_cutout": lambda i: _crop(i) + [HFlip(), CIFAR10Policy(), Cutout(16 if i.size >= 32 else max(1, i.size // 2))],
    "sim": lambda i: _sim(i, (0.08, 1.0), blur=False),
    "sim_blur": lambda i: _sim(i, (0.08, 1.0), blur=True),
    "sim_cifar": lambda i: _sim(i, (0.2, 1.0), blur=True),
    "supcon_cifar": lambda i: _sim(i, (0.2, 1.0), blur=False),
    "sim_cifar_blur_p02": lambda i: _sim(i, (0.2, 1.0), blur=True, blur_p=0.2),
    "sim_paco": lambda i: [ResizedCrop(i.size), HFlip(), ColorJitter(hue=0.0, p=1.0), Grayscale(0.2), GaussianBlur()],
    "randcls_stack": lambda i: [ResizedCrop(i.size), HFlip(), ColorJitter(hue=0.0, p=1.0), Grayscale(0.2),
                                GaussianBlur(), RandAugment()],
    "randcls": lambda i: [ResizedCrop(i.size), HFlip(), ColorJitter(hue=0.0, p=1.0), RandAugment()],
    "rescom_large": lambda i: [ResizedCrop(i.size), HFlip(), ColorJitter(hue=0.0, p=1.0), Grayscale(0.2), RandAugment()],
    "randstack": lambda i: _sim(i, (0.08, 1.0), blur=False) + [RandAugment()],
}


class BatchedView:
    """One view: the recipe's steps, then normalisation. ``x`` is this rank's [n, C, H, W] float
    batch in [0, 1]; parameters are drawn for ``global_n`` images and rows ``offset:offset+n`` used."""

    def __init__(self, recipe: str, info: ImageInfo):
        if recipe not in BATCHED_RECIPES:
            raise ConfigError(f"unknown augmentation recipe {recipe!r}; known: {sorted(BATCHED_RECIPES)}")
        self.recipe = recipe
        self.steps = BATCHED_RECIPES[recipe](info)
        self.mean, self.std = tuple(info.mean), tuple(info.std)

    def __call__(self, x: torch.Tensor, g: torch.Generator, global_n: int | None = None, offset: int = 0,
                 sizes: torch.Tensor | None = None) -> torch.Tensor:
        """``sizes`` [n, 2]: the true (h, w) of each image of a zero-padded batch (decoded photos);
        the first step must then be a resized crop."""
        n, _, h, w = x.shape
        for i, step in enumerate(self.steps):
            params = step.draw(global_n or n, g, x.device, h, w)
            params = {k: v[offset:offset + n] for k, v in params.items()}
            if sizes is not None and i == 0:
                if not isinstance(step, ResizedCrop):
                    raise ConfigError(f"recipe {self.recipe!r} does not start with a resized crop: it cannot take "
                                     "images of different sizes")
                params["sizes"] = sizes
            x = step.apply(x, params)
        mean = x.new_tensor(self.mean).view(1, -1, 1, 1)
        std = x.new_tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std

    def __repr__(self) -> str:
        return f"BatchedView({self.recipe}: {', '.join(type(s).__name__ for s in self.steps)})"


def supports(recipes: Sequence[str]) -> bool:
    return all(r in BATCHED_RECIPES for r in recipes)


def denormalize(x: torch.Tensor, info: ImageInfo) -> torch.Tensor:
    return x * x.new_tensor(info.std).view(1, -1, 1, 1) + x.new_tensor(info.mean).view(1, -1, 1, 1)


__all__ = ["BatchedView", "BATCHED_RECIPES", "Step", "resized_crop_boxes", "boxes_from_draws", "supports", "denormalize",
           "AutoAugment", "CIFAR10Policy", "RandAugment", "apply_op_slot"]
