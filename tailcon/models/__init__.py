"""Backbones and heads."""

from __future__ import annotations

from torch import nn

from .cifar_resnet import CifarResNet
from .heads import CosineClassifier, LinearClassifier, ProjectionMLP, build_classifier

CIFAR_DEPTHS = {"resnet8": 8, "resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}
BACKBONES = (*CIFAR_DEPTHS, "resnet50", "resnext50_32x4d")


def build_backbone(name: str) -> nn.Module:
    """A feature extractor with attribute ``out_dim``: CIFAR ResNets (64-d) or torchvision's
    ResNet-50 / ResNeXt-50 32x4d with the fc removed (2048-d), from scratch."""
    if name in CIFAR_DEPTHS:
        return CifarResNet(CIFAR_DEPTHS[name])
    if name in ("resnet50", "resnext50_32x4d"):
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        net.out_dim = net.fc.in_features
        net.fc = nn.Identity()
        return net
    raise ValueError(f"unknown model.backbone {name!r}; known: {', '.join(BACKBONES)}")


__all__ = ["BACKBONES", "CifarResNet", "CosineClassifier", "LinearClassifier", "ProjectionMLP",
           "build_backbone", "build_classifier"]
