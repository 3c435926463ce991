"""cRT, classifier re-training (Kang et al. 2020, "Decoupling representation and classifier"):
a stage on a trained run. The backbone of ``method.init_from`` (a run directory or checkpoint)
is frozen, the classifier re-initialised and trained alone with class-balanced batches
(``data.sampler: class_balanced`` in the shipped configs). The result is an ordinary run:
evaluate, export, predict, compare it like any other.
"""

from __future__ import annotations

from ..config import ConfigError
from ..models.pretrained import backbone_weights
from ..rundir import load_checkpoint
from .base import Method, register
from .two_stage import FrozenBackboneClassifier


@register
class CRT(FrozenBackboneClassifier, Method):
    name = "crt"
    resume_safe_keys = ("init_from",)  # a started run holds the backbone in its own checkpoint
    defaults = {
        "init_from": None,  # the trained run (or checkpoint) whose backbone is re-used
        "bn_train": False,  # True: BatchNorm re-estimates statistics on the class-balanced batches
    }

    def __init__(self, cfg, num_classes, cls_num_list):
        super().__init__(cfg, num_classes, cls_num_list)
        if not self.hparams["init_from"]:
            raise ConfigError("method crt needs method.init_from=RUN_DIR (the trained run whose backbone it re-uses)")
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    def initialize(self) -> None:
        """Load the trained backbone (fresh runs only: a resumed cRT run has it in its checkpoint)."""
        ckpt = load_checkpoint(self.hparams["init_from"], for_inference=True)
        trained = (ckpt.get("config") or {}).get("model", {}).get("backbone")
        mine = self.cfg["model"]["backbone"]
        if trained and trained != mine:
            raise ConfigError(f"method.init_from={self.hparams['init_from']} was trained with model.backbone={trained}; "
                              f"this config has {mine}: add model.backbone={trained}")
        state = backbone_weights(ckpt["model"])
        if not state:
            raise ConfigError(f"{self.hparams['init_from']} holds no backbone weights")
        try:
            self.backbone.load_state_dict(state)
        except RuntimeError as e:
            raise ConfigError(f"{self.hparams['init_from']}: its backbone does not fit this model: "
                              f"{str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}") from None

    def keeps_bn_statistics(self) -> bool:
        return not self.hparams["bn_train"]

    def training_step(self, views, labels):
        return self.linear_step(views, labels)
