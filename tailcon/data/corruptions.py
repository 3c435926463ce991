"""Common corruptions at 5 severities for CIFAR-scale images, generated on the fly.

The definitions and severity parameters are those of CIFAR-10-C (Hendrycks & Dietterich 2019),
grouped in the four standard families. Each function maps a uint8 [H, W, 3] array and a
``numpy.random.Generator`` to a uint8 array of the same shape. Frost is left out: it blends
photographs of frost that are not part of any package here. Motion blur and the snow layer's
streaks use a Gaussian-weighted line kernel in place of ImageMagick's motion blur.

Why not the ``imagecorruptions`` package (on PyPI, last released 2020): it implements the
ImageNet-C severities, which are calibrated for 224-px images (e.g. Gaussian noise sigma 0.08-0.38
against CIFAR-10-C's 0.04-0.10); CIFAR-scale robustness is reported with the CIFAR-10-C values.

For ImageNet-LT models the ImageNet-C folder layout is read instead
(:func:`imagenet_c_images`): ``ROOT/<corruption>/<severity>/<wnid>/<file>``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from ..config import ConfigError
from ..defaults import CORRUPTION_SEVERITIES

FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog"),  # frost overlays photographs of frost: released arrays only
    "digital": ("brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
SEVERITIES = CORRUPTION_SEVERITIES

Rng = np.random.Generator


def _float(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64) / 255.0


def _uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


# ---- noise -------------------------------------------------------------------------------------
def gaussian_noise(x, severity: int, rng: Rng):
    c = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    x = _float(x)
    return _uint8(x + rng.normal(size=x.shape, scale=c))


def shot_noise(x, severity: int, rng: Rng):
    c = [500, 250, 100, 75, 50][severity - 1]
    x = _float(x)
    return _uint8(rng.poisson(x * c) / c)


def impulse_noise(x, severity: int, rng: Rng):
    """Salt and pepper: a fraction ``c`` of the values set to 0 or 1 with equal odds."""
    c = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
    x = _float(x).copy()
    hit = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    x[hit & salt] = 1.0
    x[hit & ~salt] = 0.0
    return _uint8(x)


# ---- blur --------------------------------------------------------------------------------------
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """Normalised disk of ``radius`` (3x3 support below radius 8), then Gaussian-smoothed."""
    if radius <= 8:
        span = np.arange(-8, 8 + 1)
        ksize = (3, 3)
    else:
        span = np.arange(-radius, radius + 1)
        ksize = (5, 5)
    xx, yy = np.meshgrid(span, span)
    kernel = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    kernel /= kernel.sum()
    # cv2.GaussianBlur(kernel, ksize, sigmaX=alias_blur) with a truncated kernel of that size
    k1 = _gauss1d(ksize[0], alias_blur)
    kernel = ndimage.convolve1d(ndimage.convolve1d(kernel, k1, axis=0, mode="reflect"), k1, axis=1, mode="reflect")
    return kernel / kernel.sum()


def _gauss1d(size: int, sigma: float) -> np.ndarray:
    pos = np.arange(size) - (size - 1) / 2
    k = np.exp(-0.5 * (pos / sigma) ** 2)
    return k / k.sum()


def _filter_channels(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return np.stack([ndimage.convolve(x[..., ch], kernel, mode="reflect") for ch in range(x.shape[-1])], axis=-1)


def defocus_blur(x, severity: int, rng: Rng):
    c = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    return _uint8(_filter_channels(_float(x), disk_kernel(*c)))


def glass_blur(x, severity: int, rng: Rng):
    """Gaussian blur, then ``iterations`` passes of swapping each pixel with a random neighbour
    within ``delta`` (bottom-up, as the reference loops), then Gaussian blur again."""
    sigma, delta, iterations = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][severity - 1]
    x = ndimage.gaussian_filter(_float(x), sigma=(sigma, sigma, 0), mode="nearest")
    h, w = x.shape[:2]
    for _ in range(iterations):  # a per-pixel sequential process by definition (eval-time only)
        for i in range(h - delta, delta, -1):
            for j in range(w - delta, delta, -1):
                dx, dy = rng.integers(-delta, delta, size=2)
                hp, wp = i + dy, j + dx
                x[i, j], x[hp, wp] = x[hp, wp].copy(), x[i, j].copy()
    return _uint8(ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), mode="nearest"))


def motion_kernel(radius: float, sigma: float, angle_deg: float) -> np.ndarray:
    """One-sided line kernel: Gaussian weights (``sigma``) along ``angle`` over ``radius`` px."""
    n = int(np.ceil(radius))
    t = np.arange(n + 1)
    weights = np.exp(-0.5 * (t / sigma) ** 2)
    size = 2 * n + 1
    kernel = np.zeros((size, size))
    a = np.deg2rad(angle_deg)
    for ti, wt in zip(t, weights):  # at most a dozen taps
        r = int(round(n - ti * np.sin(a)))
        c = int(round(n + ti * np.cos(a)))
        kernel[r, c] += wt
    return kernel / kernel.sum()


def motion_blur(x, severity: int, rng: Rng):
    radius, sigma = [(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)][severity - 1]
    # the CIFAR parameters are for a 32-px image rendered by ImageMagick (radius in pixels)
    kernel = motion_kernel(radius * x.shape[0] / 32 / 3, sigma, rng.uniform(-45, 45))
    return _uint8(_filter_channels(_float(x), kernel))


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    h = x.shape[0]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    zoomed = ndimage.zoom(x[top:top + ch, top:top + ch], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - h) // 2
    return zoomed[trim:trim + h, trim:trim + h]


def zoom_blur(x, severity: int, rng: Rng):
    c = [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
         np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)][severity - 1]
    x = _float(x)
    out = np.zeros_like(x)
    for z in c:
        out += _clipped_zoom(x, z)
    return _uint8((x + out) / (len(c) + 1))


# ---- weather -----------------------------------------------------------------------------------
def plasma_fractal(rng: Rng, mapsize: int = 32, wibbledecay: float = 3) -> np.ndarray:
    """Diamond-square height map [mapsize, mapsize] scaled to [0, 1] (``mapsize`` a power of 2)."""
    grid = np.zeros((mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def noisy_mean(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0:mapsize:step, 0:mapsize:step]
        # squares: the centre of each cell from its four corners
        four = corners + np.roll(corners, -1, axis=0)
        four = four + np.roll(four, -1, axis=1)
        grid[half:mapsize:step, half:mapsize:step] = noisy_mean(four)
        centres = grid[half:mapsize:step, half:mapsize:step]
        # diamonds: edge midpoints from the two nearest centres and the two nearest corners
        grid[0:mapsize:step, half:mapsize:step] = noisy_mean(
            centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1))
        grid[half:mapsize:step, 0:mapsize:step] = noisy_mean(
            centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0))
        step //= 2
        wibble /= wibbledecay
    grid -= grid.min()
    return grid / grid.max()


def fog(x, severity: int, rng: Rng):
    strength, decay = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]
    x = _float(x)
    h = x.shape[0]
    size = 1 << int(np.ceil(np.log2(max(h, 2))))
    max_val = x.max()
    x = x + strength * plasma_fractal(rng, size, decay)[:h, :h, None]
    return _uint8(x * max_val / (max_val + strength))


def snow(x, severity: int, rng: Rng):
    loc, scale, zoom, threshold, radius, sigma, blend = [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)][severity - 1]
    x = _float(x)
    h = x.shape[0]
    layer = rng.normal(size=(h, h), loc=loc, scale=scale)
    layer = _clipped_zoom(layer[..., None], zoom)[..., 0]
    layer[layer < threshold] = 0
    kernel = motion_kernel(radius * h / 32 / 3, sigma, rng.uniform(-135, -45))
    layer = np.clip(ndimage.convolve(layer, kernel, mode="constant"), 0, 1)[..., None]
    gray = (x @ np.array([0.299, 0.587, 0.114]))[..., None] * 1.5 + 0.5
    x = blend * x + (1 - blend) * np.maximum(x, gray)
    return _uint8(x + layer + np.rot90(layer, k=2))


# ---- digital -----------------------------------------------------------------------------------
def brightness(x, severity: int, rng: Rng):
    c = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    hsv = rgb_to_hsv(_float(x))
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return _uint8(hsv_to_rgb(hsv))


def contrast(x, severity: int, rng: Rng):
    c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    x = _float(x)
    means = x.mean(axis=(0, 1), keepdims=True)
    return _uint8((x - means) * c + means)


def elastic_transform(x, severity: int, rng: Rng):
    """Random affine jitter of three points, then a smooth random displacement field."""
    h = x.shape[0]
    alpha, sigma, affine = [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                            (0.1, 0.03, 0.03)][severity - 1]
    alpha, sigma, affine = alpha * h, sigma * h, affine * h
    x = _float(x)
    centre = np.array([h / 2, h / 2])
    square = min(h, h) // 3
    src = np.float64([centre + square, [centre[0] + square, centre[1] - square], centre - square])
    dst = src + rng.uniform(-affine, affine, size=src.shape)
    # affine map dst -> src solved exactly from the three point pairs
    a = np.hstack([dst, np.ones((3, 1))])
    m = np.linalg.solve(a, src)  # [3, 2]: [x, y, 1] @ m
    yy, xx = np.meshgrid(np.arange(h), np.arange(h), indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel(), np.ones(h * h)], axis=1) @ m
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, h)), sigma, mode="reflect") * alpha
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, h)), sigma, mode="reflect") * alpha
    sx = pts[:, 0].reshape(h, h) + dx
    sy = pts[:, 1].reshape(h, h) + dy
    out = np.stack([ndimage.map_coordinates(x[..., ch], [sy, sx], order=1, mode="reflect")
                    for ch in range(x.shape[-1])], axis=-1)
    return _uint8(out)


def pixelate(x, severity: int, rng: Rng):
    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    h, w = x.shape[:2]
    img = Image.fromarray(np.asarray(x, dtype=np.uint8))
    small = img.resize((int(w * c), int(h * c)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX))


def jpeg_compression(x, severity: int, rng: Rng):
    quality = [80, 65, 58, 50, 40][severity - 1]
    buf = io.BytesIO()
    Image.fromarray(np.asarray(x, dtype=np.uint8)).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


# the 14 generated on the fly (an approximation of CIFAR-10-C: frost needs the original frost photos)
CORRUPTIONS: dict[str, Callable[[np.ndarray, int, Rng], np.ndarray]] = {
    name: globals()[name] for family in FAMILIES.values() for name in family if name in globals()
}
# the 15 of the released CIFAR-10-C / CIFAR-100-C arrays (Hendrycks & Dietterich 2019)
RELEASED = tuple(name for names in FAMILIES.values() for name in names)
FAMILY_OF = {name: family for family, names in FAMILIES.items() for name in names}


def corrupt_array(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Corrupt every image of a uint8 [N, H, W, 3] array (seeded: the same set every time)."""
    if name not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ConfigError(f"severity {severity}: expected 1..5")
    rng = np.random.default_rng([seed, severity, list(CORRUPTIONS).index(name)])
    return np.stack([CORRUPTIONS[name](img, severity, rng) for img in images])


def cifar_c_arrays(root: str | Path, name: str, num_test: int) -> tuple[np.ndarray, np.ndarray]:
    """The released arrays of one corruption: images uint8 [5 * N, 32, 32, 3] (severity 1 first,
    each block the test set in its order) and labels [5 * N], memory-mapped."""
    root = Path(root)
    images_file, labels_file = root / f"{name}.npy", root / "labels.npy"
    for f in (images_file, labels_file):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: not found (expected the released CIFAR-10-C / CIFAR-100-C layout: "
                                    f"ROOT/<corruption>.npy with 5 x {num_test} images and ROOT/labels.npy)")
    images, labels = np.load(images_file, mmap_mode="r"), np.load(labels_file, mmap_mode="r")
    expected = (len(SEVERITIES) * num_test, 32, 32, 3)
    if images.shape != expected or images.dtype != np.uint8 or labels.shape != (expected[0],):
        raise ConfigError(f"{images_file}: shape {images.shape} {images.dtype} (labels {labels.shape}); expected "
                         f"uint8 {expected}: 5 severities of the {num_test} test images of this dataset")
    return images, labels


def imagenet_c_images(root: str | Path, name: str, severity: int, wnid_to_label: dict[str, int]):
    """(paths, labels) of ``ROOT/<name>/<severity>/<wnid>/*`` for the classes the model knows."""
    folder = Path(root) / name / str(severity)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such ImageNet-C folder (expected ROOT/<corruption>/<severity>/<wnid>/)")
    paths, labels = [], []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        if class_dir.name in wnid_to_label:
            for f in sorted(class_dir.iterdir()):
                paths.append(str(f))
                labels.append(wnid_to_label[class_dir.name])
    if not paths:
        raise FileNotFoundError(f"{folder}: no images of known classes")
    return paths, labels
