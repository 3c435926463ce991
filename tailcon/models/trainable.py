"""Which parameters train (``model.trainable``): fine-tuning a pre-trained backbone.

* ``all``: everything (the default).
* ``last_block``: the backbone's last residual block (its BatchNorm included) and every part
  outside the backbone (heads, classifier); the rest of the backbone is frozen. The Places-LT
  protocol of PaCo/GPaCo (``paco_fp16_places.py``): an ImageNet-pretrained ResNet-152 of which only
  the last block of layer4 is fine-tuned.
* ``classifier``: only the classifier.

Frozen parameters get no gradient and no update; BatchNorm layers keep train mode, so their
running statistics still follow the new data. Parameters that were not trainable before (a
momentum encoder's copy) stay so.
"""

from __future__ import annotations

from torch import nn

from ..config import ConfigError

MODES = ("all", "last_block", "classifier")


def last_block(backbone: nn.Module) -> nn.Module:
    """The last residual block of a ResNet-style backbone: torchvision's ``layer4[-1]``, the CIFAR
    ResNet's ``layers[-1]``."""
    for name in ("layer4", "layers"):
        stage = getattr(backbone, name, None)
        if isinstance(stage, nn.Sequential) and len(stage):
            return stage[-1]
    raise ConfigError(f"model.trainable=last_block needs a ResNet-style backbone (layer4 or layers), not "
                     f"{type(backbone).__name__}")


def set_trainable(method: nn.Module, mode: str) -> nn.Module:
    """Freeze ``method``'s parameters outside what ``mode`` trains; in place, returns it."""
    if mode not in MODES:
        raise ConfigError(f"model.trainable={mode!r}: expected one of {', '.join(MODES)}")
    if mode == "all":
        return method
    if mode == "classifier":
        trainable = {id(p) for p in method.classifier.parameters()}
    else:  # everything but the backbone outside its last block (a wrapper may hold the backbone too)
        block = {id(p) for p in last_block(method.backbone).parameters()}
        trainable = {id(p) for p in method.parameters()} - {id(p) for p in method.backbone.parameters()} | block
    trainable &= {id(p) for p in method.parameters() if p.requires_grad}
    for p in method.parameters():
        p.requires_grad_(id(p) in trainable)
    return method
