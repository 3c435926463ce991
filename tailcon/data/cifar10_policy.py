"""AutoAugment's CIFAR-10 policy as ResCom's and PaCo's code apply it ("CIFAR10Policy"), on PIL
images (dvlab-research/Imbalanced-Learning@cc9b810 ResCom/; PaCo/LT/ of dvlab-research/Parametric-Contrastive-Learning).

The 25 sub-policies and magnitude bins are torchvision's, but four operations differ from
``T.AutoAugment(CIFAR10)``: rotation turns always the same way (counter-clockwise, no random
sign), shears resample bicubic (torchvision: nearest), translations keep their sub-pixel offset
(torchvision truncates to whole pixels) and solarize thresholds run from 256 (no change) down to
0 (torchvision: from 255). Affine fill is grey (128, 128, 128).

``SUB_POLICIES`` and :func:`magnitude` are shared with the batched version
(:class:`tailcon.data.batched_augment.CIFAR10Policy`), so the two cannot drift apart.
"""

from __future__ import annotations

import random

from PIL import Image, ImageEnhance, ImageOps

FILL = (128, 128, 128)
# (op, probability, magnitude index 0..9) x 2 per sub-policy
SUB_POLICIES: tuple[tuple[tuple[str, float, int], tuple[str, float, int]], ...] = (
    (("Invert", 0.1, 7), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)),
    (("Equalize", 0.2, 8), ("Equalize", 0.6, 4)),
    (("Color", 0.9, 9), ("Equalize", 0.6, 6)),
    (("AutoContrast", 0.8, 4), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 8), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
)
# ops whose magnitude gets a random sign; Rotate is deliberately not one of them
SIGNED = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Color", "Contrast", "Sharpness", "Brightness"})
_TOP = {"ShearX": 0.3, "ShearY": 0.3, "TranslateX": 150 / 331, "TranslateY": 150 / 331, "Rotate": 30.0,
        "Color": 0.9, "Contrast": 0.9, "Sharpness": 0.9, "Brightness": 0.9}


def magnitude(name: str, index: int) -> float:
    """The unsigned argument of bin ``index`` (0..9): shear factor, translation as a fraction of
    the image side, degrees, enhancement offset ``m``, bits kept (Posterize) or threshold level
    (Solarize); 0 for the ops without one. Ten evenly spaced values per op, as the released code."""
    if name in _TOP:
        return _TOP[name] * index / 9
    if name == "Posterize":
        return float(round(8 - 4 * index / 9))  # np.round of linspace(8, 4, 10); no .5 ties occur
    if name == "Solarize":
        return 256 - 256 * index / 9
    return 0.0


def _affine(img: Image.Image, matrix: tuple, resample) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, matrix, resample, fillcolor=FILL)


def apply_op(img: Image.Image, name: str, m: float) -> Image.Image:
    """Apply ``name`` with its signed argument ``m`` (see :func:`magnitude`)."""
    w, h = img.size
    if name == "ShearX":
        return _affine(img, (1, m, 0, 0, 1, 0), Image.BICUBIC)
    if name == "ShearY":
        return _affine(img, (1, 0, 0, m, 1, 0), Image.BICUBIC)
    if name == "TranslateX":
        return _affine(img, (1, 0, m * w, 0, 1, 0), Image.NEAREST)
    if name == "TranslateY":
        return _affine(img, (1, 0, 0, 0, 1, m * h), Image.NEAREST)
    if name == "Rotate":  # the code composites over grey; nearest rotation with a grey fill is the same
        return img.rotate(m, resample=Image.NEAREST, fillcolor=FILL)
    if name in ("Color", "Contrast", "Sharpness", "Brightness"):
        return getattr(ImageEnhance, name)(img).enhance(1 + m)
    if name == "Posterize":
        return ImageOps.posterize(img, int(m))
    if name == "Solarize":
        return ImageOps.solarize(img, m)
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Invert":
        return ImageOps.invert(img)
    raise ValueError(f"unknown CIFAR10Policy op {name!r}")


class CIFAR10Policy:
    """Per image: one of the 25 sub-policies uniformly; each of its two ops fires with its
    probability, signed ops take a random sign (Python's ``random``, seeded per worker)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        for name, prob, index in random.choice(SUB_POLICIES):
            if random.random() < prob:
                m = magnitude(name, index)
                img = apply_op(img, name, -m if name in SIGNED and random.random() < 0.5 else m)
        return img

    def __repr__(self) -> str:
        return "CIFAR10Policy(ResCom/PaCo flavour)"
