"""``model.pretrained: PATH``: start the backbone from local weights. Nothing downloads.

PATH is a torchvision or timm state dict (``.pth``/``.pt``, also inside ``{"state_dict": ...}``
or ``{"model": ...}``, DDP's ``module.`` prefix removed), a ``.safetensors`` file, or a tailcon
run directory / checkpoint (its ``backbone.*`` weights). Keys are mapped onto the backbone
(directly, or under a timm backbone's ``model.``), the old classifier (``fc``, ``head``,
``classifier``, ``last_linear``) is skipped, a shape mismatch anywhere else is an error naming
the key, and what the backbone kept at its initialisation (missing) or the file had in excess
(unexpected) is printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import TailconError
from ..rundir import load_checkpoint

CLASSIFIER_PREFIXES = ("fc.", "head.", "classifier.", "last_linear.", "head_drop.")


class PretrainedError(TailconError, ValueError):
    """The weights file cannot be used for this backbone; the message names the file and key."""


def backbone_weights(model_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's tensors in a tailcon model's state dict, keyed as the backbone names them."""
    return {k[len("backbone."):]: v for k, v in model_state.items() if k.startswith("backbone.")}


def read_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file or tailcon run, keyed as the network that saved them."""
    p = Path(path)
    if not p.exists():
        raise PretrainedError(f"model.pretrained={path}: no such file or run directory")
    if p.is_dir():  # a tailcon run directory
        return backbone_weights(load_checkpoint(p, for_inference=True)["model"])
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise PretrainedError('reading .safetensors weights needs safetensors: pip install "tailcon[export]"') \
                from None
        state: Any = load_file(str(p))
    else:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise PretrainedError(f"model.pretrained={path}: cannot read it as a state dict ({e})") from None
    for key in ("state_dict", "model", "model_state", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            if key == "model" and "config" in state:  # a tailcon checkpoint under another suffix
                return backbone_weights(state["model"])
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedError(f"model.pretrained={path}: not a state dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_pretrained(backbone: nn.Module, path: str | os.PathLike, log=print) -> dict[str, list[str]]:
    """Copy the weights of ``path`` into ``backbone``; returns {missing, unexpected, skipped}."""
    state = read_state(path)
    target = backbone.state_dict()
    # timm backbones keep the network under ``model.``: use whichever key mapping fits more keys
    prefix = max(("", "model."), key=lambda pre: sum(pre + k in target for k in state))
    mapped, skipped, unexpected = {}, [], []
    for key, value in state.items():
        name = prefix + key
        if name in target:
            if tuple(value.shape) != tuple(target[name].shape):
                raise PretrainedError(f"model.pretrained={path}: {key} has shape {tuple(value.shape)}, the backbone's "
                                      f"{name} has {tuple(target[name].shape)} (another architecture or width?)")
            mapped[name] = value
        elif key.startswith(CLASSIFIER_PREFIXES):
            skipped.append(key)
        else:
            unexpected.append(key)
    if not mapped:
        raise PretrainedError(f"model.pretrained={path}: none of its {len(state)} keys fits this backbone "
                              f"(e.g. {next(iter(state), '-')} vs {next(iter(target), '-')})")
    missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    backbone.load_state_dict(mapped, strict=False)
    log(f"tailcon: model.pretrained={path}: loaded {len(mapped)} tensors"
        + (f"; skipped the old classifier ({', '.join(skipped)})" if skipped else "")
        + (f"; missing, left at initialisation: {_few(missing)}" if missing else "")
        + (f"; unexpected, ignored: {_few(unexpected)}" if unexpected else ""))
    return {"missing": missing, "unexpected": unexpected, "skipped": skipped}


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")
