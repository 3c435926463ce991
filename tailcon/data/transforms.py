"""Per-image (PIL) augmentation recipes and multi-view wrappers.

A *recipe* is a name for one view's augmentation list (the authors' augmentation lists, named in each recipe); a method asks for a
tuple of recipes, e.g. BCL on CIFAR: ``("autoaug_cutout", "sim_cifar", "sim_cifar")``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

from .cifar10_policy import CIFAR10Policy
from .randaugment import RandAugment
from ..config import ConfigError

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # the CIFAR-10 constants, used for CIFAR-100 too, as the authors' CIFAR codes do
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INAT_MEAN = (0.466, 0.471, 0.380)
INAT_STD = (0.195, 0.194, 0.192)


@dataclass(frozen=True)
class ImageInfo:
    """What a transform needs to know about the data."""
    size: int  # training / test crop size
    mean: Sequence[float]
    std: Sequence[float]
    small: bool  # CIFAR-scale in-memory images (pad+crop) rather than photos (resized crops)
    resize: int | None = None  # test-time short-side resize for photos


class Cutout:
    """Zero one ``size`` x ``size`` box whose centre is uniform over the image, clipped at the
    borders, on a [C, H, W] tensor in [0, 1] (before normalisation)."""

    def __init__(self, size: int = 16, holes: int = 1):
        self.size, self.holes = size, holes

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        img = img.clone()
        for _ in range(self.holes):  # one hole in every recipe; a handful at most
            y, x = random.randrange(h), random.randrange(w)
            half = self.size // 2
            img[..., max(0, y - half):min(h, y + half), max(0, x - half):min(w, x + half)] = 0
        return img

    def __repr__(self) -> str:
        return f"Cutout(size={self.size}, holes={self.holes})"


class PILGaussianBlur:
    """PIL Gaussian blur with radius drawn uniformly from ``sigma`` (the SupCon/BCL blur)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))

    def __repr__(self) -> str:
        return f"PILGaussianBlur(sigma={self.sigma})"


def _finish(info: ImageInfo, *extra_tensor_ops) -> list:
    return [T.ToTensor(), *extra_tensor_ops, T.Normalize(info.mean, info.std)]


def _crop(info: ImageInfo, scale=(0.08, 1.0)) -> list:
    if info.small:
        return [T.RandomCrop(info.size, padding=max(1, info.size // 8))]
    return [T.RandomResizedCrop(info.size, scale=scale)]


def _jitter(hue: float = 0.1, p: float = 0.8) -> list:
    jitter = T.ColorJitter(0.4, 0.4, 0.4, hue)
    return [jitter] if p >= 1 else [T.RandomApply([jitter], p=p)]


def _sim(info: ImageInfo, scale: tuple[float, float], blur: bool, blur_p: float = 0.5) -> list:
    ops = [T.RandomResizedCrop(info.size, scale=scale), T.RandomHorizontalFlip(), *_jitter(),
           T.RandomGrayscale(p=0.2)]
    if blur:
        ops.append(T.RandomApply([PILGaussianBlur()], p=blur_p))
    return ops


RECIPES: dict[str, Callable[[ImageInfo], list]] = {
    # standard long-tail CE training view: pad+crop (CIFAR) or random-resized crop (photos), flip
    "crop_flip": lambda i: _crop(i) + [T.RandomHorizontalFlip()] + _finish(i),
    # no flip: for data where mirroring changes the class (digits)
    "crop": lambda i: _crop(i) + _finish(i),
    # Hybrid-SC/PSC CIFAR views (arXiv:2103.14267, implementation details): crop, flip, grayscale 0.2
    "crop_flip_gray": lambda i: _crop(i) + [T.RandomHorizontalFlip(), T.RandomGrayscale(p=0.2)] + _finish(i),
    # BCL / ResCom CIFAR classification view: crop, flip, AutoAugment (CIFAR-10 policy), Cutout 16
    "autoaug_cutout": lambda i: _crop(i) + [
        T.RandomHorizontalFlip(),
        T.AutoAugment(T.AutoAugmentPolicy.CIFAR10, fill=[128, 128, 128]),
    ] + _finish(i, Cutout(16 if i.size >= 32 else max(1, i.size // 2))),
    # ResCom / PaCo CIFAR view: the same with the released code's "CIFAR10Policy" flavour of the
    # policy (one-direction rotation, bicubic shear, solarize from 256: tailcon.data.cifar10_policy)
    "policy_cutout": lambda i: _crop(i) + [T.RandomHorizontalFlip(), CIFAR10Policy()]
    + _finish(i, Cutout(16 if i.size >= 32 else max(1, i.size // 2))),
    # SimAugment (MoCo v2 / SupCon), ImageNet scale: RRC 0.08-1, flip, jitter p.8, gray .2, no blur
    "sim": lambda i: _sim(i, (0.08, 1.0), blur=False) + _finish(i),
    # SimAugment with blur p 0.5 (DSCL's stage-2 view: SY-Xuan/DSCL@79f8cef equal_lincls.py)
    "sim_blur": lambda i: _sim(i, (0.08, 1.0), blur=True) + _finish(i),
    # SimAugment at 32x32 for CIFAR contrastive views: RRC 0.2-1 and blur p 0.5
    "sim_cifar": lambda i: _sim(i, (0.2, 1.0), blur=True) + _finish(i),
    # GPaCo CIFAR key view: sim_cifar with blur p 0.2
    "sim_cifar_blur_p02": lambda i: _sim(i, (0.2, 1.0), blur=True, blur_p=0.2) + _finish(i),
    # PaCo ImageNet key view "Sim": RRC, flip, jitter (always, hue 0), gray .2, blur p .5
    "sim_paco": lambda i: [T.RandomResizedCrop(i.size, scale=(0.08, 1.0)), T.RandomHorizontalFlip(),
                           *_jitter(hue=0.0, p=1.0), T.RandomGrayscale(p=0.2),
                           T.RandomApply([PILGaussianBlur()], p=0.5)] + _finish(i),
    # PaCo/GPaCo "RandAug-cls-stack": randcls with grayscale .2 and blur p .5 before RandAugment n2 m10
    "randcls_stack": lambda i: [T.RandomResizedCrop(i.size, scale=(0.08, 1.0)), T.RandomHorizontalFlip(),
                                *_jitter(hue=0.0, p=1.0), T.RandomGrayscale(p=0.2),
                                T.RandomApply([PILGaussianBlur()], p=0.5), RandAugment()] + _finish(i),
    # SupContrast CIFAR view: RRC 0.2-1, flip, jitter p.8, gray .2, no blur
    "supcon_cifar": lambda i: _sim(i, (0.2, 1.0), blur=False) + _finish(i),
    # BCL ImageNet classification view: RRC, flip, jitter (always, hue 0), RandAugment n2 m10
    "randcls": lambda i: [T.RandomResizedCrop(i.size, scale=(0.08, 1.0)), T.RandomHorizontalFlip(),
                          *_jitter(hue=0.0, p=1.0), RandAugment()] + _finish(i),
    # ResCom large-scale view: RRC, flip, jitter (always, hue 0), grayscale 0.2, RandAugment n2 m10
    "rescom_large": lambda i: [T.RandomResizedCrop(i.size, scale=(0.08, 1.0)), T.RandomHorizontalFlip(),
                               *_jitter(hue=0.0, p=1.0), T.RandomGrayscale(p=0.2), RandAugment()] + _finish(i),
    # BCL "randstack": SimAugment followed by RandAugment
    "randstack": lambda i: _sim(i, (0.08, 1.0), blur=False) + [RandAugment()] + _finish(i),
}


def build_view(recipe: str, info: ImageInfo) -> T.Compose:
    if recipe not in RECIPES:
        raise ConfigError(f"unknown augmentation recipe {recipe!r}; known: {sorted(RECIPES)}")
    return T.Compose(RECIPES[recipe](info))


def build_eval_transform(info: ImageInfo) -> T.Compose:
    """CIFAR: ToTensor + normalise only. Photos: resize short side, centre crop (the authors' test transforms)."""
    if info.small:
        return T.Compose(_finish(info))
    resize = info.resize or int(round(info.size * 256 / 224))
    return T.Compose([T.Resize(resize), T.CenterCrop(info.size)] + _finish(info))


class MultiView:
    """Apply one transform per view to the same image; returns a tuple of tensors."""

    def __init__(self, views: Sequence[Callable]):
        self.views = list(views)

    def __call__(self, img):
        return tuple(v(img) for v in self.views)

    def __repr__(self) -> str:
        return "MultiView(\n" + "\n".join(f"  {v!r}" for v in self.views) + "\n)"


def build_train_transform(recipes: Sequence[str], info: ImageInfo) -> MultiView:
    return MultiView([build_view(r, info) for r in recipes])
