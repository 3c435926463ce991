"""Classifier and projection heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.precision import at_least_fp32
from ..config import ConfigError


class CosineClassifier(nn.Module):
    """Normalised linear classifier ("NormedLinear" of the LDAM-DRW and BCL codes): s * cos(x, W[:, c]).

    The weight is stored feature-major, [F, C], as in the authors' code, with no bias; each
    column is initialised uniform in [-1, 1] and rescaled to unit norm.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0):
        super().__init__()
        w = torch.empty(in_features, num_classes).uniform_(-1, 1)
        self.weight = nn.Parameter(w / w.norm(dim=0, keepdim=True).clamp_min(1e-12))
        self.scale = scale

    def class_vectors(self) -> torch.Tensor:
        """One raw (un-normalised) weight vector per class, [C, F]."""
        return self.weight.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)


class LinearClassifier(nn.Linear):
    """Plain linear layer with bias; ``class_vectors`` returns its weight rows [C, F]."""

    def class_vectors(self) -> torch.Tensor:
        return self.weight


def build_classifier(kind: str, in_features: int, num_classes: int, scale: float = 30.0,
                     init: str = "torch") -> nn.Module:
    """``linear`` (with bias) or ``cosine``. ``init="kaiming_normal"`` draws the linear weight as the
    LDAM-DRW CIFAR ResNet does (kaiming-normal, fan-in; its ``_weights_init`` is applied to the whole
    network, classifier included), the bias keeping nn.Linear's; ``torch``: nn.Linear's own."""
    if kind == "linear":
        layer = LinearClassifier(in_features, num_classes)
        if init == "kaiming_normal":
            nn.init.kaiming_normal_(layer.weight)
        elif init != "torch":
            raise ConfigError(f"unknown model.classifier_init {init!r}; expected 'torch' or 'kaiming_normal'")
        return layer
    if kind == "cosine":
        return CosineClassifier(in_features, num_classes, scale)
    raise ConfigError(f"unknown model.classifier {kind!r}; expected 'linear' or 'cosine'")


class ProjectionMLP(nn.Module):
    """(Linear(in, hidden) [-> BatchNorm1d] -> ReLU) x hidden_layers -> Linear(hidden, out) [-> L2 normalise].

    SupCon / Hybrid use it without BN; BCL's h and g use it with BN (FlamieZhu/Balanced-Contrastive-Learning@a56b509 models/resnext.py).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = False,
                 normalize: bool = True, hidden_layers: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(hidden_layers):  # GPaCo's head has two hidden layers
            layers.append(nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Linear(hidden_dim, out_dim))
        self.net = nn.Sequential(*layers)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        return F.normalize(at_least_fp32(z), dim=1) if self.normalize else z  # >= fp32 under autocast
