"""Batched image ops with one parameter per sample, on any device.

Every function takes ``x`` [B, C, H, W] float in [0, 1] and per-sample parameters as tensors of
length B on the same device; none loops over samples. Each one reproduces a torchvision
functional op on a single image (same formula, same coordinate conventions), which the tests
check pixel by pixel; :mod:`tailcon.data.batched_augment` draws the random parameters.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (PIL: 0.299)


def _bcast(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, 1, 1, 1)


def where_samples(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per sample: ``a`` where ``mask`` [B] is true, else ``b``."""
    return torch.where(_bcast(mask), a, b)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 1, H, W] luma."""
    w = x.new_tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``factor * a + (1 - factor) * b`` clamped to [0, 1] (torchvision's _blend)."""
    f = _bcast(factor)
    return (f * a + (1 - f) * b).clamp_(0, 1)


def pad_crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad by ``padding`` then crop H x W at (top, left) of the padded image (RandomCrop)."""
    b, c, h, w = x.shape
    xp = F.pad(x, (padding,) * 4)
    rows = (top.long().view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w)
    cols = (left.long().view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
    wp = w + 2 * padding
    flat = xp.flatten(2).gather(2, (rows * wp + cols).reshape(b, c, h * w))
    return flat.view(b, c, h, w)


def hflip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return where_samples(mask, x.flip(-1), x)


def resampling_matrix(start: torch.Tensor, length: torch.Tensor, size: int, in_size: int) -> torch.Tensor:
    """[B, size, in_size] weights that resample each sample's span ``start .. start + length`` of
    an axis of ``in_size`` pixels to ``size`` pixels with PIL's bilinear filter: a triangle
    widened by the scale factor when shrinking (antialiasing, as PIL and torchvision's
    ``antialias=True`` do), plain bilinear interpolation when enlarging; edge taps renormalised.
    """
    b = start.shape[0]
    start, length = start.to(torch.float64).view(b, 1, 1), length.to(torch.float64).view(b, 1, 1)
    scale = length / size
    support = scale.clamp(min=1.0)  # the filter's half-width, in input pixels
    centre = (torch.arange(size, device=start.device, dtype=torch.float64).view(1, size, 1) + 0.5) * scale
    lo = torch.floor(centre - support + 0.5).clamp(min=0)
    hi = torch.minimum(torch.floor(centre + support + 0.5), length)
    pos = torch.arange(in_size, device=start.device, dtype=torch.float64).view(1, 1, in_size) - start
    taps = (pos >= lo) & (pos < hi)
    weights = (1 - ((pos - centre + 0.5) / support).abs()).clamp(min=0) * taps
    return weights / weights.sum(dim=2, keepdim=True).clamp(min=1e-12)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop ``boxes`` [B, 4] = (top, left, height, width) in integer pixels and resize each crop to
    ``size`` x ``size`` as PIL's bilinear resize does (antialiased when shrinking): two batched
    matrix products with per-sample resampling matrices (:func:`resampling_matrix`)."""
    b, c, h, w = x.shape
    rows = resampling_matrix(boxes[:, 0], boxes[:, 2], size, h).to(x.dtype)  # [B, size, H]
    cols = resampling_matrix(boxes[:, 1], boxes[:, 3], size, w).to(x.dtype)  # [B, size, W]
    out = torch.einsum("bsh,bchw->bcsw", rows, x)
    return torch.einsum("bcsw,btw->bcst", out, cols)


# ---- colour ----------------------------------------------------------------------------------
def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return blend(x, mean.expand_as(x), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(x, grayscale(x).expand_as(x), factor)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` [B] in [-0.5, 0.5] turns (torchvision's HSV round trip)."""
    r, g, b = x.unbind(dim=1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_divisor = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_divisor, (maxc - g) / cr_divisor, (maxc - b) / cr_divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    h = torch.remainder(h + shift.view(-1, 1, 1), 1.0)
    # HSV -> RGB in closed form (same values as torchvision's six-sector table, fewer passes):
    # channel = v - v * s * clamp(min(k, 4 - k), 0, 1) with k = (n + 6h) mod 6, n = 5, 3, 1
    v, s, h6 = maxc.unsqueeze(1), s.unsqueeze(1), (h * 6.0).unsqueeze(1)
    n = x.new_tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)
    k = torch.remainder(n + h6, 6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """ColorJitter with per-sample factors [B, 4] = (brightness, contrast, saturation, hue shift)
    applied in the per-sample order [B, 4] (a permutation of 0..3 per row, as ColorJitter's
    ``randperm(4)``)."""
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    for position in range(4):
        for k, op in enumerate(ops):
            x = where_samples(order[:, position] == k, op(x, factors[:, k]), x)
    return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur, reflect padding, per-sample ``sigma`` [B] (TF.gaussian_blur)."""
    b, c, h, w = x.shape
    half = (kernel_size - 1) * 0.5
    pos = torch.linspace(-half, half, kernel_size, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (pos.view(1, -1) / sigma.view(-1, 1).to(x.dtype)) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [B*C, K]
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, kernel_size), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, kernel_size, 1), groups=b * c)
    return y.view(b, c, h, w)


def cutout(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int) -> torch.Tensor:
    """Zero the ``size`` box centred at (cy, cx) [B], clipped at the borders (tailcon's Cutout)."""
    h, w = x.shape[-2:]
    half = size // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    cy, cx = cy.long().view(-1, 1, 1), cx.long().view(-1, 1, 1)
    inside = (ys >= cy - half) & (ys < cy + half) & (xs >= cx - half) & (xs < cx + half)
    return x.masked_fill(inside.unsqueeze(1), 0.0)


# ---- the AutoAugment / RandAugment operation set ---------------------------------------------
def to_levels(x: torch.Tensor) -> torch.Tensor:
    """Float [0, 1] -> integer levels 0..255 (as uint8 images hold them)."""
    return (x * 255).round_().clamp_(0, 255)


def invert(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return where_samples(mask, 1.0 - x, x)


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert levels >= ``threshold`` [B] (in 0..255 levels; 256 leaves the image unchanged)."""
    levels = to_levels(x)
    return torch.where(levels >= _bcast(threshold), 1.0 - x, x)


def solarize_add(x: torch.Tensor, addition: torch.Tensor, threshold: float = 128) -> torch.Tensor:
    """Add ``addition`` [B] levels to levels below ``threshold`` (clipped to 255)."""
    levels = to_levels(x)
    added = (levels + _bcast(addition)).clamp(max=255) / 255
    return torch.where(levels < threshold, added, x)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top ``bits`` [B] bits of each level (8 or more: unchanged)."""
    levels = to_levels(x).to(torch.int64)
    drop = (8 - bits.to(torch.int64).clamp(0, 8)).view(-1, 1, 1, 1)
    kept = (levels >> drop) << drop
    return kept.to(x.dtype) / 255


def autocontrast(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    flat = hi == lo
    lo = torch.where(flat, torch.zeros_like(lo), lo)
    hi = torch.where(flat, torch.ones_like(hi), hi)
    return where_samples(mask, ((x - lo) / (hi - lo)).clamp(0, 1), x)


def equalize(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel on 256 levels (torchvision's _scale_channel, batched)."""
    b, c, h, w = x.shape
    levels = to_levels(x).to(torch.int64).view(b * c, h * w)
    hist = torch.zeros(b * c, 256, device=x.device, dtype=torch.int64)
    hist.scatter_add_(1, levels, torch.ones_like(levels))
    top = levels.max(dim=1, keepdim=True).values
    step = (h * w - hist.gather(1, top)) // 255  # all pixels but those of the highest level
    safe = step.clamp(min=1)
    lut = (torch.cumsum(hist, dim=1) + safe // 2) // safe
    lut = F.pad(lut, (1, 0))[:, :-1].clamp(0, 255)
    out = torch.where(step == 0, levels, lut.gather(1, levels))
    return where_samples(mask, out.view(b, c, h, w).to(x.dtype) / 255, x)


def adjust_sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the 3x3 smoothed image (borders kept), as PIL / torchvision do."""
    b, c, h, w = x.shape
    kernel = x.new_ones(3, 3)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(c, 1, 3, 3)
    smooth = F.conv2d(x, kernel, groups=c)
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    return blend(x, degenerate, factor)


def inverse_affine(angle: torch.Tensor, translate: torch.Tensor, shear: torch.Tensor,
                   center: torch.Tensor) -> torch.Tensor:
    """[B, 2, 3] output->input pixel maps of torchvision's _get_inverse_affine_matrix (scale 1).

    ``angle`` [B] degrees, ``translate`` [B, 2] pixels, ``shear`` [B, 2] degrees, ``center`` [B, 2]
    relative to the image centre."""
    # float64 like torchvision's Python-float matrix: nearest-neighbour ties then round alike
    rot = torch.deg2rad(angle.double())
    sx, sy = torch.deg2rad(shear[:, 0].double()), torch.deg2rad(shear[:, 1].double())
    cx, cy = center[:, 0].double(), center[:, 1].double()
    tx, ty = translate[:, 0].double(), translate[:, 1].double()
    a = torch.cos(rot - sy) / torch.cos(sy)
    bb = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    m0, m1, m3, m4 = d, -bb, -c, a
    m2 = m0 * (-cx - tx) + m1 * (-cy - ty) + cx
    m5 = m3 * (-cx - tx) + m4 * (-cy - ty) + cy
    return torch.stack([torch.stack([m0, m1, m2], 1), torch.stack([m3, m4, m5], 1)], 1)


def warp_affine(x: torch.Tensor, matrix: torch.Tensor, fill: Sequence[float], mode: str = "nearest") -> torch.Tensor:
    """Apply per-sample inverse affine maps [B, 2, 3] (pixel units about the image centre) as
    torchvision's tensor ``affine`` does: grid_sample, align_corners False, ``fill`` [C] in [0, 1]
    outside the image."""
    b, c, h, w = x.shape
    xs = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w, device=x.device, dtype=x.dtype)
    ys = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h, device=x.device, dtype=x.dtype)
    base = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w), torch.ones(h, w, device=x.device,
                                                                                         dtype=x.dtype)], -1)
    scale = x.new_tensor([0.5 * w, 0.5 * h])
    theta = matrix.to(x.dtype).transpose(1, 2) / scale  # [B, 3, 2]
    grid = base.view(1, h * w, 3).expand(b, h * w, 3).bmm(theta).view(b, h, w, 2)
    with_mask = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
    out = F.grid_sample(with_mask, grid, mode=mode, padding_mode="zeros", align_corners=False)
    img, valid = out[:, :-1], out[:, -1:]
    fill_img = x.new_tensor(fill).view(1, -1, 1, 1)
    if mode == "nearest":
        return torch.where(valid < 0.5, fill_img.expand_as(img), img)
    return img * valid + (1 - valid) * fill_img


def shear_degrees(magnitude: torch.Tensor) -> torch.Tensor:
    """AutoAugment's shear magnitude (tan of the angle) -> degrees (float64), as torchvision converts it."""
    return torch.rad2deg(torch.atan(magnitude.double()))


__all__ = [n for n in dir() if not n.startswith("_") and n not in {"annotations", "math", "torch", "F", "Sequence"}]
