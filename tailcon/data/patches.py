"""DSCL's stage-1 views: query view, key view, and L patches cut from the query crop (SY-Xuan/DSCL@79f8cef dscl/loader_roi.py)."""

from __future__ import annotations

import random

import torch
from PIL import Image
from torchvision import transforms as T

from .transforms import ImageInfo, PILGaussianBlur


def _colour(hue: float = 0.1) -> list:
    return [T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, hue)], p=0.8), T.RandomGrayscale(p=0.2),
            T.RandomApply([PILGaussianBlur()], p=0.5)]


class PatchViews:
    """Returns ``(query, key, patches [L, 3, p, p], boxes [L, 4])`` for one PIL image.

    * query: RandomResizedCrop(size, 0.08-1) and a horizontal flip (p 0.5), *then* the L patch
      boxes are drawn in that flipped crop, so every box addresses exactly the pixels its patch
      shows (ROI pooling on the query's feature map sees the same region); colour jitter p 0.8,
      grayscale 0.2, blur 0.5 follow on the query itself.
    * boxes: RandomResizedCrop-style, area (0.05, 0.6) of the crop, log-uniform ratio (3/4, 4/3),
      10 attempts then centre fallback; stored as (x1, y1, x2, y2) pixels of the query crop.
    * patches: the box region of the (pre-colour) query crop resized to p x p, then their own
      flip (p 0.5), jitter, grayscale and blur. A patch flip mirrors the patch about its own centre;
      the teacher's 2x2 ROI output is averaged, so the box needs no change for it.
    * key: an independent RandomResizedCrop, jitter (hue 0) always, flip; no grayscale or blur.
    """

    def __init__(self, info: ImageInfo, num_patches: int = 5, patch_size: int = 64,
                 patch_scale: tuple[float, float] = (0.05, 0.6)):
        self.info, self.num_patches, self.patch_size = info, num_patches, patch_size
        self.patch_scale = tuple(patch_scale)
        self.crop = T.RandomResizedCrop(info.size, scale=(0.08, 1.0))
        finish = [T.ToTensor(), T.Normalize(info.mean, info.std)]
        self.query_tail = T.Compose(_colour() + finish)
        self.key = T.Compose([T.RandomResizedCrop(info.size, scale=(0.08, 1.0)), T.ColorJitter(0.4, 0.4, 0.4, 0.0),
                              T.RandomHorizontalFlip()] + finish)
        self.patch_tail = T.Compose([T.RandomHorizontalFlip()] + _colour() + finish)

    def __call__(self, img: Image.Image):
        q = self.crop(img)
        if random.random() < 0.5:
            q = q.transpose(Image.FLIP_LEFT_RIGHT)
        boxes, patches = [], []
        ratio = (3 / 4, 4 / 3)
        for _ in range(self.num_patches):  # L (5) patches per image, a hyperparameter
            i, j, h, w = T.RandomResizedCrop.get_params(q, self.patch_scale, ratio)
            boxes.append((j, i, j + w, i + h))
            patch = q.crop((j, i, j + w, i + h)).resize((self.patch_size, self.patch_size), Image.BILINEAR)
            patches.append(self.patch_tail(patch))
        return (self.query_tail(q), self.key(img), torch.stack(patches),
                torch.tensor(boxes, dtype=torch.float32))

    def __repr__(self) -> str:
        return f"PatchViews(size={self.info.size}, L={self.num_patches}, patch={self.patch_size}, scale={self.patch_scale})"


