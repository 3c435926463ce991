"""``tailcon export RUN --format safetensors|torchscript|onnx``: a standalone inference artifact.

The artifact is the backbone and the classifier (the method's test-time logits) with the
normalisation built in: input float images [B, 3, S, S] in [0, 1], already resized and cropped
as the run's test transform does (S = ``image_size``; photos: short side to ``resize``, centre
crop S), output logits [B, C]. No optimizer state, no queues or momentum encoders. Metadata
(classes, training counts, preprocessing, the run's config, tailcon's version) travels inside
the file: safetensors metadata, a TorchScript extra file ``tailcon.json``, ONNX metadata_props
``tailcon``.

``tailcon.load(FILE)`` reads them back (:mod:`tailcon.inference.artifacts`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from .. import __version__, config
from ..inference.artifacts import ARTIFACT, FORMATS, SUFFIX, ExportError, InferenceModel, need_module
from ..inference.predictor import image_info
from ..methods import build_method
from ..rundir import RunDir, atomic_replace, load_checkpoint, resolve_checkpoint, run_dir_of

def inference_model(ckpt: dict[str, Any]) -> tuple[InferenceModel, dict[str, Any]]:
    """The artifact's model (eval mode, CPU) and metadata from a loaded checkpoint."""
    cfg = config.complete(ckpt["config"])
    method = build_method(cfg, int(ckpt["num_classes"]), ckpt["cls_num_list"])
    method.load_state_dict(ckpt["model"])
    info = dataclasses.asdict(image_info(ckpt))
    if not info["small"]:
        info["resize"] = info["resize"] or int(round(info["size"] * 256 / 224))
    meta = {"artifact": ARTIFACT, "tailcon": __version__, "method": cfg["method"]["name"],
            "backbone": cfg["model"]["backbone"], "num_classes": int(ckpt["num_classes"]),
            "classes": [str(c) for c in (ckpt.get("classes") or range(ckpt["num_classes"]))],
            "cls_num_list": [int(n) for n in ckpt["cls_num_list"]], "image_info": info, "epoch": ckpt.get("epoch"),
            "input": "float32 [B, 3, size, size] in [0, 1] (RGB), after the test resize/crop; output: logits [B, C]",
            "config": config.plain(cfg)}
    model = InferenceModel(method.backbone, method.classifier, info["mean"], info["std"]).eval().requires_grad_(False)
    return model, meta


def export(path: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None, which: str = "last",
           force: bool = False) -> Path:
    """Write the artifact of a run directory or checkpoint; returns its path. The default ``out``
    is ``RUN_DIR/export/<checkpoint><suffix>``; an existing file is refused unless ``force``."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    ckpt_path = resolve_checkpoint(path, which)
    target = Path(out) if out else RunDir(run_dir_of(ckpt_path)).path / "export" / f"{ckpt_path.stem}{SUFFIX[fmt]}"
    if target.is_dir():
        raise ExportError(f"--out {target} is a directory; give the artifact's file name (e.g. "
                          f"{target / (ckpt_path.stem + SUFFIX[fmt])})")
    if target.exists() and not force:
        raise ExportError(f"{target} exists; nothing was written (--force replaces it, or give --out)")
    model, meta = inference_model(load_checkpoint(ckpt_path, for_inference=True))
    meta["source_checkpoint"] = str(ckpt_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    WRITERS[fmt](model, meta, target)
    return target


def _write_safetensors(model: InferenceModel, meta: dict[str, Any], target: Path) -> None:
    st = need_module("safetensors.torch", "--format safetensors")
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_replace(target, lambda tmp: st.save_file(tensors, str(tmp), metadata={"tailcon": json.dumps(meta)}))


def _example(meta: dict[str, Any]) -> torch.Tensor:
    size = int(meta["image_info"]["size"])
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def _write_torchscript(model: InferenceModel, meta: dict[str, Any], target: Path) -> None:
    with warnings.catch_warnings():  # newer torch marks TorchScript as deprecated; the format still loads
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, _example(meta))
        atomic_replace(target, lambda tmp: torch.jit.save(traced, str(tmp),
                                                          _extra_files={"tailcon.json": json.dumps(meta)}))


def _write_pt2(model: InferenceModel, meta: dict[str, Any], target: Path) -> None:
    """``torch.export`` (the successor of TorchScript): any batch size, metadata as an extra file."""
    program = torch.export.export(model, (_example(meta),), dynamic_shapes={"images": {0: torch.export.Dim("batch")}})
    atomic_replace(target, lambda tmp: torch.export.save(program, str(tmp),
                                                         extra_files={"tailcon.json": json.dumps(meta)}))


def _write_onnx(model: InferenceModel, meta: dict[str, Any], target: Path) -> None:
    onnx = need_module("onnx", "--format onnx")

    def write(tmp: Path) -> None:
        x = _example(meta)
        # the exporter may put the weights in a side file named after its output: export into a
        # scratch folder, then save one self-contained file
        with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".onnx-export-") as scratch:
            raw = str(Path(scratch) / "model.onnx")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:  # the torch.export-based exporter when onnxscript is there, else the TorchScript one
                    import onnxscript  # noqa: F401

                    torch.onnx.export(model, (x,), raw, dynamo=True, input_names=["images"],
                                      output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},))
                except ImportError:
                    torch.onnx.export(model, (x,), raw, dynamo=False, input_names=["images"], output_names=["logits"],
                                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
            proto = onnx.load(raw)  # external data, if any, is read in here
        entry = proto.metadata_props.add()
        entry.key, entry.value = "tailcon", json.dumps(meta)
        onnx.save(proto, str(tmp))

    atomic_replace(target, write)


WRITERS: dict[str, Callable[[InferenceModel, dict[str, Any], Path], None]] = {
    "safetensors": _write_safetensors, "torchscript": _write_torchscript, "onnx": _write_onnx, "pt2": _write_pt2}


