"""Use a trained model: ``tailcon.load(path)`` and ``tailcon predict``.

The checkpoint carries everything inference needs (config, class names, training counts, image
size and normalisation), so the training data need not be present. Images go through the
run's own test-time preprocessing; the logits are the method's test-time logits (its
``forward``: e.g. logit-adjusted training predicts with the raw logits, as the method prescribes).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import numpy as np
import torch
from PIL import Image

from .data.build import DataBundle
from .data.transforms import ImageInfo, build_eval_transform
from .engine.checkpoint import load_checkpoint

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]


def checkpoint_path(path: str | os.PathLike, which: str = "last") -> Path:
    """A checkpoint file, or a run directory's ``last.pt``/``best.pt`` (a staged run: its last stage)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such run directory or checkpoint")
    if not (p / f"{which}.pt").is_file() and (p / "stages.json").is_file():
        p = p / json.loads((p / "stages.json").read_text())[-1]
    if not (p / f"{which}.pt").is_file():
        raise FileNotFoundError(f"{p} holds no {which}.pt")
    return p / f"{which}.pt"


def image_info(ckpt: dict[str, Any]) -> ImageInfo:
    if ckpt.get("image_info"):
        return ImageInfo(**ckpt["image_info"])
    from .data import build_data  # checkpoints written before image_info was stored: needs the data

    return build_data(ckpt["config"]).info


class Predictor:
    """A trained model with its preprocessing. ``predictor(images)`` -> probabilities [B, C];
    :meth:`topk` -> per image a list of (class name, probability)."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device | None = None, which: str = "last"):
        from .methods import get_method

        self.checkpoint = checkpoint_path(path, which)
        ckpt = load_checkpoint(self.checkpoint)
        cfg = copy.deepcopy(ckpt["config"])
        if cfg["method"].get("stage") == "linear":  # weights come from this checkpoint, not from init_from
            cfg["method"]["stage"] = "both"
        self.config = cfg
        self.info = image_info(ckpt)
        self.classes: list[str] = list(ckpt.get("classes") or range(ckpt["num_classes"]))
        self.classes = [str(c) for c in self.classes]
        bundle = DataBundle(name=cfg["data"]["name"], train=None, test=None, val=None,
                            num_classes=int(ckpt["num_classes"]), classes=self.classes, info=self.info,
                            cls_num_list=list(ckpt.get("cls_num_list") or []))
        self.model = get_method(cfg["method"]["name"])(cfg, bundle)
        self.model.load_state_dict(ckpt["model"])
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.transform = build_eval_transform(self.info)
        self.epoch = ckpt.get("epoch")

    # ---- preprocessing ---------------------------------------------------------------------
    def _to_pil(self, img: ImageLike) -> Image.Image:
        if isinstance(img, (str, os.PathLike)):
            try:
                with Image.open(img) as f:
                    return f.convert("RGB")
            except (OSError, ValueError) as e:
                raise ValueError(f"{img}: cannot read the image ({e})") from e
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
        return self.model(self.preprocess(images).to(self.device)).float().cpu()

    def __call__(self, images) -> torch.Tensor:
        return self.logits(images).softmax(dim=1)

    def topk(self, images, k: int = 5) -> list[list[tuple[str, float]]]:
        probs = self(images)
        p, idx = probs.topk(min(k, probs.shape[1]), dim=1)
        return [[(self.classes[j], float(q)) for q, j in zip(pr, ix)] for pr, ix in zip(p.tolist(), idx.tolist())]

    def __repr__(self) -> str:
        return (f"Predictor({self.config['method']['name']}, {self.config['model']['backbone']}, "
                f"{len(self.classes)} classes, {self.checkpoint}, epoch {self.epoch})")


def load(path: str | os.PathLike, device: str | torch.device | None = None, which: str = "last") -> Predictor:
    """Load a run directory or checkpoint for inference (see :class:`Predictor`)."""
    return Predictor(path, device=device, which=which)


def format_topk(names: Iterable[str], results: Sequence[Sequence[tuple[str, float]]]) -> str:
    lines = []
    for name, top in zip(names, results):
        lines.append(f"{name}")
        lines += [f"  {rank + 1}. {cls:<20s} {prob * 100:6.2f}%" for rank, (cls, prob) in enumerate(top)]
    return "\n".join(lines)
