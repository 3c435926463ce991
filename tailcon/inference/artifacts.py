"""Reading what ``tailcon export`` writes: the artifact formats, their metadata, and the model
they hold (``tailcon.load(FILE)`` goes through :func:`load_exported`).

An artifact is the backbone and the classifier with the normalisation built in: input float
images [B, 3, S, S] in [0, 1], output logits [B, C]; its metadata (classes, training counts,
preprocessing, the run's config, tailcon's version) travels inside the file.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from .. import config
from ..errors import TailconError
from ..defaults import EXPORT_FORMATS
from ..models import build_backbone, build_classifier

FORMATS = EXPORT_FORMATS
SUFFIX = {"safetensors": ".safetensors", "torchscript": ".torchscript.pt", "onnx": ".onnx", "pt2": ".pt2"}
# formats whose loading can run code stored in the file (TorchScript programs; pickles inside a .pt2)
NEEDS_TRUST = ("torchscript", "pt2")
ARTIFACT = "tailcon-inference/1"


class ExportError(TailconError, ValueError):
    """The export cannot be made (a missing package, a file in the way); the message says why."""


class InferenceModel(nn.Module):
    """Backbone + classifier with the normalisation built in: [B, 3, S, S] in [0, 1] -> logits."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module, mean, std):
        super().__init__()
        self.backbone, self.classifier = backbone, classifier
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def logits_of_normalized(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits_of_normalized((images - self.mean) / self.std)


def _build(meta: dict[str, Any]) -> InferenceModel:
    m = config.complete(meta["config"])["model"]
    backbone = build_backbone(m["backbone"])
    classifier = build_classifier(m["classifier"], backbone.num_features, int(meta["num_classes"]), float(m["cosine_scale"]))
    info = meta["image_info"]
    return InferenceModel(backbone, classifier, info["mean"], info["std"])


def need_module(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"{what} needs the {module} package: pip install \"tailcon[export]\"") from None


def read_safetensors(path: str | os.PathLike) -> tuple[InferenceModel, dict[str, Any]]:
    """The model (eval mode, CPU) and metadata of a safetensors artifact."""
    st = need_module("safetensors", "reading a .safetensors artifact")
    with st.safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("tailcon")
        if raw is None:
            raise ExportError(f"{path} is not a tailcon export (no 'tailcon' metadata)")
        meta = json.loads(raw)
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    model = _build(meta)
    model.load_state_dict(tensors)
    return model.eval().requires_grad_(False), meta


def export_format(path: str | os.PathLike) -> Optional[str]:
    """The ``tailcon export`` format a file name says (by its suffix), or None."""
    return next((fmt for fmt, suffix in SUFFIX.items() if str(path).endswith(suffix)), None)


def load_exported(path: str | os.PathLike) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """Any of the artifacts as ``(fn, metadata)``: ``fn(images [B, 3, S, S] in [0, 1])``
    -> logits [B, C] (CPU)."""
    path = Path(path)
    if path.name.endswith(SUFFIX["safetensors"]):
        model, meta = read_safetensors(path)
        return torch.no_grad()(lambda x: model(x)), meta
    if path.name.endswith(SUFFIX["onnx"]):
        onnx, ort = need_module("onnx", "reading an ONNX artifact"), need_module("onnxruntime", "running an ONNX artifact")
        meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["tailcon"])
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.float().numpy()})[0]), meta
    extra = {"tailcon.json": ""}
    if path.name.endswith(SUFFIX["pt2"]):
        module = torch.export.load(str(path), extra_files=extra).module()
        return torch.no_grad()(lambda x: module(x)), json.loads(extra["tailcon.json"])
    with warnings.catch_warnings():  # deprecated in newer torch, still the way to read TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return torch.no_grad()(lambda x: module(x)), json.loads(extra["tailcon.json"])
