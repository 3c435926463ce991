"""torchvision's ResNet-50, ResNeXt-50 32x4d and ResNet-152 as backbones, with the feature API
every tailcon backbone has (as timm's models): ``num_features``, ``forward_features`` (the last
feature map) and ``forward`` (the pooled features). The parameter names are torchvision's, so
its ImageNet weights load as they are (``model.pretrained``)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

# name -> (blocks per stage, groups, width per group), as torchvision's builders set them
ARCHITECTURES = {
    "resnet50": ([3, 4, 6, 3], 1, 64),
    "resnext50_32x4d": ([3, 4, 6, 3], 32, 4),
    "resnet152": ([3, 8, 36, 3], 1, 64),
}


class TorchvisionResNet(ResNet):
    """torchvision's ResNet without its classifier: images -> pooled features [B, num_features]."""

    def __init__(self, name: str, zero_init_residual: bool = False):
        layers, groups, width = ARCHITECTURES[name]
        super().__init__(Bottleneck, layers, groups=groups, width_per_group=width,
                         zero_init_residual=zero_init_residual)
        self.num_features = self.fc.in_features
        self.fc = nn.Identity()  # no parameters: the state dict holds torchvision's names without fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map [B, num_features, H/32, W/32], before pooling."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.forward_features(x)), 1)
