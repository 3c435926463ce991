"""Backbones and heads."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .cifar_resnet import CifarResNet
from .heads import CosineClassifier, LinearClassifier, ProjectionMLP, build_classifier
from .pretrained import PretrainedError, load_pretrained
from .timm_backbone import PREFIX as TIMM_PREFIX
from .timm_backbone import TimmBackbone, check_timm_name
from .torchvision_resnet import ARCHITECTURES, TorchvisionResNet
from ..config import ConfigError

CIFAR_DEPTHS = {"resnet8": 8, "resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}
TORCHVISION = tuple(ARCHITECTURES)
BACKBONES = (*CIFAR_DEPTHS, *TORCHVISION)


# backbones registered by name (your own modules: custom_imports / the tailcon.plugins entry points)
BACKBONE_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str):
    """Decorator: ``@register_backbone("mynet")`` over ``fn(zero_init_residual: bool) -> nn.Module``,
    a feature extractor with the backbone API: ``num_features`` (the size of its pooled features),
    ``forward`` (images -> pooled features) and, for methods that pool regions of the feature map
    (dscl), ``forward_features`` (the map); then ``model.backbone=mynet`` builds it."""
    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        BACKBONE_BUILDERS[name] = fn
        return fn
    return add


def build_backbone(name: str, zero_init_residual: bool = False) -> nn.Module:
    """A feature extractor with timm's API (``num_features``, ``forward_features``; ``forward``
    gives the pooled features): CIFAR ResNets (64-d), torchvision's ResNet-50 / ResNeXt-50 32x4d /
    ResNet-152 without the fc (2048-d), ``timm:<name>``, or a registered one; from scratch
    (``model.pretrained`` loads weights afterwards)."""
    if name.startswith(TIMM_PREFIX):
        return TimmBackbone(name[len(TIMM_PREFIX):])
    if name in BACKBONE_BUILDERS:
        net = BACKBONE_BUILDERS[name](zero_init_residual=zero_init_residual)
        if not isinstance(getattr(net, "num_features", None), int):
            raise ConfigError(f"backbone {name!r} (registered) has no integer num_features: the size of its pooled "
                              "features (the attribute timm's models and tailcon's backbones have)")
        return net
    if name in CIFAR_DEPTHS:
        return CifarResNet(CIFAR_DEPTHS[name], zero_init_residual=zero_init_residual)
    if name in TORCHVISION:
        return TorchvisionResNet(name, zero_init_residual=zero_init_residual)
    raise ConfigError(f"unknown model.backbone {name!r}; known: {', '.join(BACKBONES)}")


def feature_map(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The backbone's last feature map [B, C, H, W] before global pooling (for ROI pooling)."""
    fmap = backbone.forward_features(x)
    if fmap.ndim != 4:
        raise ConfigError(f"this backbone gives {fmap.ndim}-d features (tokens), not a [B, C, H, W] map: methods "
                          "that pool regions of the feature map (dscl) need a convolutional model")
    return fmap


@torch.no_grad()
def check_input_size(backbone: nn.Module, size: int, name: str) -> None:
    """One image of ``size`` x ``size`` through ``backbone`` before a run writes anything: a
    network whose strides or kernels need larger images fails here with a message that names the
    size it needs, not at step 1 with a convolution's traceback."""
    was_training = backbone.training
    param = next(backbone.parameters(), None)
    x = torch.zeros(1, 3, size, size, device=param.device if param is not None else None,
                    dtype=param.dtype if param is not None and param.is_floating_point() else None)
    try:
        backbone.eval()
        backbone(x)
    except (RuntimeError, ValueError, AssertionError) as e:
        wanted = getattr(getattr(backbone, "model", None), "pretrained_cfg", {}).get("input_size")
        needs = f"its default input is {wanted[-1]}x{wanted[-2]}: set data.image_size={wanted[-1]}" if wanted else \
            "set a larger data.image_size"
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model.backbone={name} cannot take the {size}x{size} images of this dataset ({why}); "
                         f"{needs}, or choose a network made for small images (resnet8 ... resnet110)") from None
    finally:
        backbone.train(was_training)


def check_backbone(name: Any) -> str | None:
    """The ``model.backbone`` rule: None when valid, else what was expected."""
    if isinstance(name, str) and name.startswith(TIMM_PREFIX):
        return check_timm_name(name)
    if name in BACKBONES or name in BACKBONE_BUILDERS:
        return None
    return f"one of {', '.join((*BACKBONES, *BACKBONE_BUILDERS))}, or timm:<model name>"


__all__ = ["check_backbone", "check_input_size", "register_backbone", "BACKBONE_BUILDERS",
           "load_pretrained", "PretrainedError", "TimmBackbone", "feature_map", "BACKBONES", "CifarResNet",
           "CosineClassifier", "LinearClassifier", "ProjectionMLP", "build_backbone", "build_classifier"]
