"""RandAugment "rand-n2-m10-mstd0.5" (the timm / PaCo flavour used by BCL), on PIL images.

Per image: pick ``num_ops`` of the 15 ops uniformly with replacement; each fires with
probability ``prob``; at each application the magnitude is drawn from N(magnitude, mstd) and
clipped to [0, 10]. Level-to-argument maps follow timm's rand_augment_transform, which BCL's main.py calls.
"""

from __future__ import annotations

import random
from typing import Callable

from PIL import Image, ImageEnhance, ImageOps

FILL = (124, 116, 104)  # ImageNet mean * 255, rounded
_RESAMPLE = (Image.BILINEAR, Image.BICUBIC)


def _signed(v: float) -> float:
    return -v if random.random() < 0.5 else v


def _affine(img: Image.Image, matrix: tuple) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, matrix, resample=random.choice(_RESAMPLE), fillcolor=FILL)


def _solarize_add(img: Image.Image, m: float) -> Image.Image:
    add = int(110 * m / 10)
    lut = [min(255, i + add) if i < 128 else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def _posterize(img: Image.Image, m: float) -> Image.Image:
    bits = int(4 * m / 10)
    return img if bits >= 8 else ImageOps.posterize(img, bits)


def _enhance(kind) -> Callable[[Image.Image, float], Image.Image]:
    return lambda img, m: kind(img).enhance(0.1 + 1.8 * m / 10)


OPS: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    "AutoContrast": lambda img, m: ImageOps.autocontrast(img),
    "Equalize": lambda img, m: ImageOps.equalize(img),
    "Invert": lambda img, m: ImageOps.invert(img),
    "Rotate": lambda img, m: img.rotate(_signed(30 * m / 10), resample=random.choice(_RESAMPLE), fillcolor=FILL),
    "PosterizeTpu": _posterize,
    "Solarize": lambda img, m: ImageOps.solarize(img, int(256 * m / 10)),
    "SolarizeAdd": _solarize_add,
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "ShearX": lambda img, m: _affine(img, (1, _signed(0.3 * m / 10), 0, 0, 1, 0)),
    "ShearY": lambda img, m: _affine(img, (1, 0, 0, _signed(0.3 * m / 10), 1, 0)),
    "TranslateXRel": lambda img, m: _affine(img, (1, 0, _signed(0.45 * m / 10) * img.size[0], 0, 1, 0)),
    "TranslateYRel": lambda img, m: _affine(img, (1, 0, 0, 0, 1, _signed(0.45 * m / 10) * img.size[1])),
}


class RandAugment:
    def __init__(self, num_ops: int = 2, magnitude: float = 10.0, mstd: float = 0.5, prob: float = 0.5):
        self.num_ops, self.magnitude, self.mstd, self.prob = num_ops, magnitude, mstd, prob
        self.names = list(OPS)

    def __call__(self, img: Image.Image) -> Image.Image:
        for name in random.choices(self.names, k=self.num_ops):
            if random.random() > self.prob:
                continue
            m = min(10.0, max(0.0, random.gauss(self.magnitude, self.mstd)))
            img = OPS[name](img, m)
        return img

    def __repr__(self) -> str:
        return f"RandAugment(n={self.num_ops}, m={self.magnitude}, mstd={self.mstd}, p={self.prob})"
