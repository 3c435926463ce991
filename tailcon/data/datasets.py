"""Dataset classes shared by every source: in-memory uint8 arrays and image files.

Every dataset exposes ``targets`` (int64 array), ``num_classes`` and ``classes``, and its
``__getitem__`` returns ``(transform(image), label)``; a multi-view transform returns a tuple of
tensors, which the default collate turns into a list of batches.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import TailconError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class DataError(TailconError, ValueError):
    """Bad input data: the message names the file, line or value.

    Raised in a DataLoader worker, torch re-raises it in the main process with the worker's whole
    traceback as its message; the constructor keeps only the one line that says what is wrong.
    """

    def __init__(self, message: str = ""):
        if "Original Traceback" in message:  # torch's ExceptionWrapper.reraise()
            last = message.rstrip().splitlines()[-1]
            prefix = f"{type(self).__module__}.{type(self).__qualname__}: "
            message = last[len(prefix):] if last.startswith(prefix) else last
        super().__init__(message)


def open_checked(path, max_pixels: Optional[int] = Image.MAX_IMAGE_PIXELS, name: Optional[str] = None) -> Image.Image:
    """Open an image file lazily (header only) after checking its size against ``max_pixels``
    (None: no limit); a missing, corrupt or too large file is a :class:`DataError` naming it.

    PIL's own guard is off while the header is read (this check replaces it, with the file
    named and the user's limit) and is restored right after, so other readers keep theirs.
    ``path`` may be an open file; ``name`` is then what the messages call it."""
    shown = name or path
    try:
        pil_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            im = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = pil_limit
    except FileNotFoundError:
        raise DataError(f"image file not found: {shown}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"corrupt or unreadable image: {shown} ({e})") from None
    w, h = im.size
    if max_pixels is not None and w * h > max_pixels:
        im.close()
        raise DataError(f"image too large: {shown} is {w}x{h} = {w * h} pixels, over the limit of {max_pixels} "
                        "(data.max_image_pixels; raise it if the image is genuine)")
    return im


def open_rgb(path: str | os.PathLike, max_pixels: Optional[int] = Image.MAX_IMAGE_PIXELS) -> Image.Image:
    """Read an image file as RGB, checked as :func:`open_checked` does."""
    with open_checked(path, max_pixels) as im:
        try:
            with warnings.catch_warnings():  # the size was checked, against the user's limit
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                return im.convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"corrupt or unreadable image: {path} ({e})") from None


def image_digest(data: bytes) -> bytes:
    """The digest that identifies an image's content (its file's bytes, or its pixels)."""
    return hashlib.blake2b(data, digest_size=16).digest()


def _decodes(path: str, max_pixels: Optional[int]) -> tuple[Optional[str], Optional[bytes]]:
    """(None when the whole file decodes, else the reason; a digest of the file's bytes). JPEGs
    decode at reduced scale (``draft``): every byte of the entropy-coded data is still read, so a
    cut-off file fails. The file is read once, for both."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return f"image file not found: {path}", None
    except OSError as e:
        return f"corrupt or unreadable image: {path} ({e})", None
    return _decodes_bytes(path, data, max_pixels), image_digest(data)


def _decodes_bytes(path: str, data: bytes, max_pixels: Optional[int]) -> Optional[str]:
    try:
        with open_checked(io.BytesIO(data), max_pixels, name=str(path)) as im:
            if im.format == "JPEG":
                im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
        return None
    except DataError as e:
        return str(e)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f"corrupt or unreadable image: {path} ({e})"


def scan_images(dataset: "FileListDataset", split: str, workers: int = 8, shard: tuple[int, int] = (0, 1),
                say: Callable[[str], None] = print, every: int = 20_000) -> tuple[list[str], list[Optional[bytes]]]:
    """Read and decode the images of a split once (``shard`` = (rank, world size): every
    world-size-th file from rank's), in a thread pool (PIL's decoders release the GIL), a progress
    line per ``every`` files: (the reasons of the files that fail, a content digest per file)."""
    from concurrent.futures import ThreadPoolExecutor

    paths = dataset.paths[shard[0]::shard[1]]
    bad: list[str] = []
    digests: list[Optional[bytes]] = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, (problem, digest) in enumerate(pool.map(lambda p: _decodes(p, dataset.max_pixels), paths,
                                                       chunksize=64), 1):
            digests.append(digest)
            if problem is not None:
                bad.append(problem)
            if i % every == 0 and i < len(paths):
                say(f"tailcon: checking the {split} images: {i}/{len(paths)}")
    return bad, digests


def raise_unreadable(bad: Sequence[str], total_bad: int, n: int, split: str) -> None:
    """The :class:`DataError` for ``total_bad`` of ``n`` images of a split that cannot be read
    (``bad``: the reasons this process found; the others name theirs)."""
    if not total_bad:
        return
    shown = "; ".join(bad[:5]) + (f"; and {total_bad - min(len(bad), 5)} more" if total_bad > min(len(bad), 5) else "")
    raise DataError(f"{total_bad} of the {n} {split} images cannot be read: {shown or 'named by the other processes'}. "
                    "Fix or remove them and run again (every split is checked before training; "
                    "data.check_images=false skips the check)")


def check_labels(targets: np.ndarray, num_classes: int, where: str) -> None:
    if len(targets) == 0:
        return
    lo, hi = int(targets.min()), int(targets.max())
    if lo < 0 or hi >= num_classes:
        bad = int(np.flatnonzero((targets < 0) | (targets >= num_classes))[0])
        raise DataError(f"{where}: label {int(targets[bad])} at index {bad} is out of range "
                        f"[0, {num_classes - 1}]")


class LabeledImages(Dataset):
    """Common part: labels, class names, transform; subclasses say how to ``load`` image i."""

    def __init__(self, targets: Sequence[int], num_classes: int, classes: Optional[Sequence[str]],
                 transform: Optional[Callable], name: str):
        self.targets = np.asarray(targets, dtype=np.int64)
        self.num_classes = int(num_classes)
        check_labels(self.targets, self.num_classes, name)
        self.classes = list(classes) if classes is not None else [str(c) for c in range(num_classes)]
        self.transform = transform
        self.name = name

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __getitem__(self, index: int):
        img = self.load(index)
        return (self.transform(img) if self.transform else img), int(self.targets[index])


class ArrayDataset(LabeledImages):
    """Images held in memory as one uint8 array [N, H, W, 3] (CIFAR-scale data)."""

    def __init__(self, images: np.ndarray, targets: Sequence[int], num_classes: int,
                 classes: Optional[Sequence[str]] = None, transform: Optional[Callable] = None,
                 name: str = "array"):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise DataError(f"{name}: images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
        if len(targets) != len(images):
            raise DataError(f"{name}: {len(images)} images but {len(targets)} labels")
        super().__init__(targets, num_classes, classes, transform, name)
        self.images = images

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])

    def on_device(self, device) -> tuple:
        """The images as one uint8 tensor [N, 3, H, W] and the labels [N] on ``device``, uploaded
        once and kept (evaluation every epoch reuses them)."""
        import torch

        cached = getattr(self, "_device_copy", None)
        if cached is None or cached[0].device != torch.device(device):
            images = torch.from_numpy(np.ascontiguousarray(self.images)).to(device).permute(0, 3, 1, 2).contiguous()
            cached = (images, torch.as_tensor(self.targets).to(device))
            self._device_copy = cached
        return cached


class FileListDataset(LabeledImages):
    """Images on disk given as (path, label) pairs; opened as RGB on access (:func:`open_rgb`)."""

    def __init__(self, paths: Sequence[str], targets: Sequence[int], num_classes: int,
                 classes: Optional[Sequence[str]] = None, transform: Optional[Callable] = None,
                 name: str = "files", max_pixels: Optional[int] = Image.MAX_IMAGE_PIXELS):
        super().__init__(targets, num_classes, classes, transform, name)
        self.paths = list(paths)
        self.max_pixels = max_pixels

    def load(self, index: int) -> Image.Image:
        try:
            return open_rgb(self.paths[index], self.max_pixels)
        except DataError as e:
            if "not found" in str(e):
                raise DataError(f"{e} (listed in {self.name})") from None
            raise


# A list file without data.num_classes implies max(label) + 1 classes; a typo label (1000000000)
# would build that many class names, so an implied count above this is refused.
MAX_IMPLIED_CLASSES = 100_000


def list_images(items: Sequence[str | os.PathLike]) -> list[str]:
    """Image files named on a command line: a directory as its images (:data:`IMAGE_EXTENSIONS`,
    recursively, sorted, symbolic links to directories not followed), anything else as it is (a
    missing file is then reported as one unreadable image among the others)."""
    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(Path(root) / f) for root, _, files in os.walk(p) for f in files
                           if Path(f).suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DataError(f"{p} holds no images with extensions {', '.join(IMAGE_EXTENSIONS)}")
            out += found
        else:
            out.append(str(item))
    return out


def parse_list_file(list_path: str | os.PathLike, root: str | os.PathLike,
                    num_classes: Optional[int] = None) -> tuple[list[str], np.ndarray]:
    """Read a ``relative/path label`` list (ImageNet-LT / Places-LT / iNaturalist convention).

    Blank lines and lines starting with ``#`` are skipped; a UTF-8 byte-order mark is dropped.
    Paths are taken byte for byte: bytes that are not UTF-8 (a Latin-1 list) stay the bytes of
    the file name they spell. Labels must be below ``num_classes`` when it is given, else below
    :data:`MAX_IMPLIED_CLASSES`. A malformed line raises :class:`DataError` naming the file and
    the line number.
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise DataError(f"list file not found: {list_path}")
    paths, labels = [], []
    with open(list_path, encoding="utf-8-sig", errors="surrogateescape") as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.rsplit(None, 1)  # paths may contain spaces; the label is the last field
            if len(parts) != 2:
                raise DataError(f"{list_path}:{lineno}: expected '<relative/path> <label>', got {text!r}")
            rel, lab = parts
            try:
                label = int(lab)
            except ValueError:
                raise DataError(f"{list_path}:{lineno}: label {lab!r} is not an integer") from None
            if label < 0:
                raise DataError(f"{list_path}:{lineno}: label {label} is negative")
            if num_classes is not None and label >= num_classes:
                raise DataError(f"{list_path}:{lineno}: label {label} is out of range [0, {num_classes - 1}] "
                                f"({num_classes} classes; data.num_classes)")
            if num_classes is None and label >= MAX_IMPLIED_CLASSES:
                raise DataError(f"{list_path}:{lineno}: label {label} would mean {label + 1} classes; if that is "
                                "intended set data.num_classes, else correct the label")
            paths.append(os.path.join(str(root), rel))
            labels.append(label)
    if not paths:
        raise DataError(f"list file {list_path} holds no images")
    return paths, np.asarray(labels, dtype=np.int64)


def scan_image_folder(folder: str | os.PathLike, classes: Optional[Sequence[str]] = None,
                      known_as: str = "the training split") -> tuple[list[str], np.ndarray, list[str]]:
    """``folder/<class>/<image>``: returns paths, labels and the class names (sorted, or
    ``classes``: the ids are their positions there, and a class folder not among them is an
    error saying that ``known_as`` lacks it)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    if classes is None:
        classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
        if not classes:
            raise DataError(f"image folder {folder} has no class sub-folders (expected root/class/image)")
    else:
        extra = sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name not in classes)
        if extra:
            raise DataError(f"{folder} has class folders that {known_as} lacks: {', '.join(extra[:20])}"
                            f"{' ...' if len(extra) > 20 else ''}; their images could not be scored. Add training "
                            "images for them or remove them")
    index = {c: i for i, c in enumerate(classes)}
    paths, labels = [], []
    for c in classes:
        d = folder / c
        if not d.is_dir():
            continue  # a class absent from this split (e.g. test) is allowed
        for p in sorted(d.rglob("*")):
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                paths.append(str(p))
                labels.append(index[c])
    if not paths:
        raise DataError(f"image folder {folder} holds no images with extensions {IMAGE_EXTENSIONS}")
    return paths, np.asarray(labels, dtype=np.int64), list(classes)
