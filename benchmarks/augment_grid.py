"""Grid of augmented views of real CIFAR-10 images, for a person to look at (docs/augment_grid.png).

Rows: the original, then for each recipe two batched (on-device) views and two reference
(PIL/torchvision per-image) views of the same image. The two pipelines draw different random
parameters, so compare the kinds of changes, not pixel for pixel.

    python benchmarks/augment_grid.py --root data/cifar --out docs/augment_grid.png
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image, ImageDraw

from tailcon.data.batched_augment import BatchedView, denormalize
from tailcon.data.cifar import CIFAR10, find_cifar_folder, load_cifar_split
from tailcon.data.transforms import CIFAR_MEAN, CIFAR_STD, ImageInfo, build_view

RECIPES = ("crop_flip", "autoaug_cutout", "sim_cifar", "randstack")
SCALE = 3  # 32 px -> 96 px tiles


def _tile(x: torch.Tensor) -> Image.Image:
    arr = (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr).resize((32 * SCALE, 32 * SCALE), Image.NEAREST)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="data/cifar")
    p.add_argument("--out", default="docs/augment_grid.png")
    p.add_argument("--images", type=int, default=4)
    a = p.parse_args()
    images, labels = load_cifar_split(find_cifar_folder(a.root, CIFAR10), CIFAR10, train=False)
    pick = [int(np.flatnonzero(labels == c)[0]) for c in range(a.images)]
    batch = torch.from_numpy(images[pick]).permute(0, 3, 1, 2).float() / 255
    info = ImageInfo(32, CIFAR_MEAN, CIFAR_STD, True)
    columns = 1 + 4 * len(RECIPES)
    pad, head = 4, 18
    w, h = columns * (32 * SCALE + pad), len(pick) * (32 * SCALE + pad) + head
    sheet = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((2, 2), "original", fill="black")
    for k, recipe in enumerate(RECIPES):
        draw.text((2 + (1 + 4 * k) * (32 * SCALE + pad), 2), f"{recipe}: device x2 | PIL x2", fill="black")
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    for k, recipe in enumerate(RECIPES):
        view = BatchedView(recipe, info)
        device_views = [denormalize(view(batch, g), info) for _ in range(2)]
        reference = build_view(recipe, info)
        for row, idx in enumerate(pick):
            pil = Image.fromarray(images[idx])
            ref_views = [denormalize(reference(pil).unsqueeze(0), info)[0] for _ in range(2)]
            tiles = [device_views[0][row], device_views[1][row], *ref_views]
            for j, t in enumerate(tiles):
                col = 1 + 4 * k + j
                sheet.paste(_tile(t), (col * (32 * SCALE + pad), head + row * (32 * SCALE + pad)))
    for row in range(len(pick)):
        sheet.paste(_tile(batch[row]), (0, head + row * (32 * SCALE + pad)))
    sheet.save(a.out)
    print(f"wrote {a.out} ({w}x{h})")


if __name__ == "__main__":
    main()
