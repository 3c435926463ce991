"""Use a trained model: ``tailcon.load(path)`` and ``tailcon predict``.

The checkpoint carries everything inference needs (config, class names, training counts, image
size and normalisation), so the training data need not be present. Images go through the
run's own test-time preprocessing; the logits are the method's test-time logits (its
``forward``: e.g. logit-adjusted training predicts with the raw logits, as the method prescribes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import numpy as np
import torch
from PIL import Image

from .. import config
from ..data import build_data
from ..data.datasets import open_rgb
from ..data.transforms import ImageInfo, build_eval_transform
from ..engine.device import resolve_device
from ..methods import build_method
from ..rundir import load_checkpoint, resolve_checkpoint
from .artifacts import NEEDS_TRUST, ExportError, export_format, load_exported, read_safetensors

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]


def image_info(ckpt: dict[str, Any]) -> ImageInfo:
    if ckpt.get("image_info"):
        info = dict(ckpt["image_info"])
        return ImageInfo(**{**info, "mean": tuple(info["mean"]), "std": tuple(info["std"])})
    # checkpoints written before image_info was stored: the data says it
    return build_data(config.complete(ckpt["config"])).info


class Predictor:
    """A trained model with its preprocessing. ``predictor(images)`` -> probabilities [B, C];
    :meth:`topk` -> per image a list of (class name, probability)."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device | None = None, which: str = "last",
                 trust: bool = False):
        fmt = export_format(path) if Path(path).is_file() else None
        if fmt is not None:  # an artifact of `tailcon export`
            self.checkpoint = Path(path)
            if fmt == "safetensors":
                exported, meta = read_safetensors(path)
                self.model = _NormalizedInput(exported)
            else:
                if fmt in NEEDS_TRUST and not trust:
                    raise ExportError(f"{path} is a {fmt} export, whose loading can run code stored in it: load it with "
                                      "tailcon.load(PATH, trust=True) (tailcon predict --trust) only if you trust its "
                                      "source, or use the .safetensors export or the run directory")
                fn, meta = load_exported(path)
                self.model = _ExportedFunction(fn, meta["image_info"]["mean"], meta["image_info"]["std"])
            ckpt = {"config": meta["config"], "image_info": meta["image_info"], "classes": meta["classes"],
                    "num_classes": meta["num_classes"], "epoch": meta.get("epoch")}
        else:
            self.checkpoint = resolve_checkpoint(path, which)
            ckpt = load_checkpoint(self.checkpoint, for_inference=True)  # no optimizer state
            # the weights, a linear stage's frozen backbone included, all come from this checkpoint
            self.model = build_method(config.complete(ckpt["config"]), int(ckpt["num_classes"]), ckpt["cls_num_list"])
            self.model.load_state_dict(ckpt["model"])
        self.config = cfg = config.complete(ckpt["config"])
        self.info = image_info(ckpt)
        self.classes = [str(c) for c in (ckpt.get("classes") or range(ckpt["num_classes"]))]
        self.max_image_pixels = cfg["data"]["max_image_pixels"]
        self.device = resolve_device(str(device) if device is not None else "auto")  # as training resolves it
        self.model.to(self.device).eval()
        self.transform = build_eval_transform(self.info)
        self.epoch = ckpt.get("epoch")

    # ---- preprocessing ---------------------------------------------------------------------
    def _to_pil(self, img: ImageLike) -> Image.Image:
        if isinstance(img, (str, os.PathLike)):
            return open_rgb(img, self.max_image_pixels)
        if isinstance(img, Image.Image):
            return img.convert("RGB")
        if isinstance(img, torch.Tensor):
            t = img.detach().cpu()
            if t.ndim != 3:
                raise ValueError(f"expected an image tensor [C, H, W], got shape {tuple(t.shape)}")
            if t.is_floating_point():
                t = (t.clamp(0, 1) * 255).round().to(torch.uint8)
            img = t.permute(1, 2, 0).numpy()
        if isinstance(img, np.ndarray):
            arr = img if img.dtype == np.uint8 else np.clip(np.asarray(img) * 255, 0, 255).round().astype(np.uint8)
            if arr.ndim == 2 or arr.shape[-1] == 1:
                arr = np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
            return Image.fromarray(arr)
        raise TypeError(f"cannot classify an object of type {type(img).__name__}")

    def preprocess(self, images: Union[ImageLike, Sequence[ImageLike]]) -> torch.Tensor:
        """Paths, PIL images, uint8/float [H, W, 3] arrays or [C, H, W] tensors (values in [0, 1]
        or uint8), or a [B, C, H, W] batch -> the normalised batch the model expects."""
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            images = list(images)
        elif isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        elif not isinstance(images, (list, tuple)):
            images = [images]
        return torch.stack([self.transform(self._to_pil(img)) for img in images])

    # ---- prediction ------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, images) -> torch.Tensor:
        return self.batch_logits(self.preprocess(images))

    @torch.no_grad()
    def batch_logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] of a batch already preprocessed (:meth:`preprocess`)."""
        return self.model(batch.to(self.device)).float().cpu()

    @torch.no_grad()
    def features(self, images) -> torch.Tensor:
        """Backbone features [B, D] (what the classifier sees) of images, as :meth:`preprocess` takes them."""
        return self.batch_features(self.preprocess(images))

    @torch.no_grad()
    def batch_features(self, batch: torch.Tensor) -> torch.Tensor:
        if not hasattr(self.model, "features"):
            raise ExportError(f"{self.checkpoint} is an export holding logits only; features need the run "
                             "directory or its checkpoint")
        return self.model.features(batch.to(self.device)).float().cpu()

    def __call__(self, images) -> torch.Tensor:
        """Class probabilities [B, C]."""
        return self.logits(images).softmax(dim=1)

    def topk(self, images, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per image, the ``k`` most probable classes as (class name, probability)."""
        return self.batch_topk(self.preprocess(images), k)

    def batch_topk(self, batch: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        if int(k) < 1:
            raise ValueError(f"top-k needs k >= 1, got {k}")
        probs = self.batch_logits(batch).softmax(dim=1)
        p, idx = probs.topk(min(k, probs.shape[1]), dim=1)
        return [[(self.classes[j], float(q)) for q, j in zip(pr, ix)] for pr, ix in zip(p.tolist(), idx.tolist())]

    def __repr__(self) -> str:
        return (f"Predictor({self.config['method']['name']}, {self.config['model']['backbone']}, "
                f"{len(self.classes)} classes, {self.checkpoint}, epoch {self.epoch})")


class _ExportedFunction(torch.nn.Module):
    """An ONNX / TorchScript / torch.export artifact (which normalises its [0, 1] input itself) fed
    the Predictor's already-normalised batches; it runs on the CPU."""

    def __init__(self, fn, mean, std):
        super().__init__()
        self.fn = fn
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = (x.float() * self.std + self.mean).cpu()
        return self.fn(images).to(x.device)


class _NormalizedInput(torch.nn.Module):
    """An exported model fed the Predictor's already-normalised batches."""

    def __init__(self, exported):
        super().__init__()
        self.exported = exported

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.exported.logits_of_normalized(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.exported.backbone(x)


def load(path: str | os.PathLike, device: str | torch.device | None = None, which: str = "last",
         trust: bool = False) -> Predictor:
    """Load a run directory, a checkpoint or a ``tailcon export`` artifact for inference (see
    :class:`Predictor`); the optimizer state of a checkpoint is never read. Safetensors and ONNX
    exports load as they are; TorchScript and ``.pt2`` (torch.export) files can carry code that
    loading runs, so they need ``trust=True``."""
    return Predictor(path, device=device, which=which, trust=trust)


def format_topk(names: Iterable[str], results: Sequence[Sequence[tuple[str, float]]]) -> str:
    lines = []
    for name, top in zip(names, results):
        lines.append(f"{name}")
        lines += [f"  {rank + 1}. {cls:<20s} {prob * 100:6.2f}%" for rank, (cls, prob) in enumerate(top)]
    return "\n".join(lines)
