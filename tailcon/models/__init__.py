"""Backbones and heads."""

from __future__ import annotations

import torch
from torch import nn

from .cifar_resnet import CifarResNet
from .heads import CosineClassifier, LinearClassifier, ProjectionMLP, build_classifier

CIFAR_DEPTHS = {"resnet8": 8, "resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}
TORCHVISION = ("resnet50", "resnext50_32x4d", "resnet152")
BACKBONES = (*CIFAR_DEPTHS, *TORCHVISION)


def build_backbone(name: str, zero_init_residual: bool = False) -> nn.Module:
    """A feature extractor with attribute ``out_dim``: CIFAR ResNets (64-d) or torchvision's
    ResNet-50 / ResNeXt-50 32x4d / ResNet-152 with the fc removed (2048-d), from scratch."""
    if name in CIFAR_DEPTHS:
        return CifarResNet(CIFAR_DEPTHS[name], zero_init_residual=zero_init_residual)
    if name in TORCHVISION:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None, zero_init_residual=zero_init_residual)
        net.out_dim = net.fc.in_features
        net.fc = nn.Identity()
        return net
    raise ValueError(f"unknown model.backbone {name!r}; known: {', '.join(BACKBONES)}")


def feature_map(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The backbone's last feature map before global pooling (for ROI pooling)."""
    if hasattr(backbone, "forward_map"):
        return backbone.forward_map(x)
    b = backbone  # torchvision ResNet / ResNeXt
    x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
    return b.layer4(b.layer3(b.layer2(b.layer1(x))))


__all__ = ["feature_map", "BACKBONES", "CifarResNet", "CosineClassifier", "LinearClassifier", "ProjectionMLP",
           "build_backbone", "build_classifier"]
