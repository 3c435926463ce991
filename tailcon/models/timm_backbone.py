"""``model.backbone: timm:<name>``: any timm model as a feature extractor (``pip install
"tailcon[timm]"``), through timm's public interface: ``forward_features`` then
``forward_head(..., pre_logits=True)`` for the pooled features, ``num_features`` for their size.
Built from scratch (``pretrained=False``): weights come from ``model.pretrained`` (a file), never
from the network."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ConfigError

PREFIX = "timm:"


def _timm():
    try:
        import timm
    except ImportError:
        raise ConfigError('model.backbone=timm:<name> needs timm: pip install "tailcon[timm]"') from None
    return timm


def check_timm_name(name: str) -> str | None:
    """None when ``timm:<name>`` names a timm model, else what was expected."""
    import difflib

    try:
        timm = _timm()
    except ValueError as e:
        return str(e)
    model = name[len(PREFIX):]
    if timm.is_model(model):
        return None
    close = difflib.get_close_matches(model, timm.list_models(), n=3, cutoff=0.6)
    return f"a timm model name after 'timm:'{' (did you mean ' + ', '.join(close) + '?)' if close else ''}"


class TimmBackbone(nn.Module):
    """A timm model without its classifier: images -> pooled features [B, num_features]."""

    def __init__(self, name: str):
        super().__init__()
        self.model = _timm().create_model(name, pretrained=False, num_classes=0)  # no classifier: features only
        self.num_features = int(self.model.num_features)
        self.timm_name = name

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """timm's unpooled features: a map [B, C, H, W] for CNNs, tokens for transformers."""
        return self.model.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.forward_features(x), pre_logits=True)
