"""Resolving a config: compose it (:func:`tailcon.config.compose`), then check it against what
the registries hold: the method and its own keys, the dataset, the backbone, the augmentation
recipes and samplers. This module sits above the registries, so that none of them imports it.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Optional

from . import config
from .config import ConfigError, Rule, one_of
from .data.build import DATASETS
from .data.samplers import SAMPLERS
from .data.transforms import RECIPES
from .methods import get_method
from .models import check_backbone

# the rules of the schema's registry-backed keys (``Key.registry``), read when a value is checked
REGISTRY_RULES: dict[str, Rule] = {
    "datasets": one_of(lambda: DATASETS),
    "augment recipes": one_of(lambda: RECIPES),
    "samplers": one_of(lambda: SAMPLERS),
    "backbones": check_backbone,
}


def value_rules() -> dict[str, Rule]:
    """Every key's value rule: the schema's own and the registry-backed ones."""
    registry = {k.name: REGISTRY_RULES[k.registry] for k in config.SCHEMA if k.registry is not None}
    return {**config.VALUE_RULES, **registry}


def resolve(path: Optional[str | os.PathLike], overrides: Iterable[str] = (), *,
            extra: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Defaults <- config file (with ``_base_``) <- ``extra`` <- ``key=value`` overrides, every
    key and value checked, the method's keys filled in: the config a run records."""
    return validate(config.compose(path, overrides, extra=extra))


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check every value against its rule and the method's own keys and ranges, and fill
    ``cfg["method"]`` with the method's defaults (what ``config.yaml`` holds). Idempotent."""
    config.check_values(cfg, value_rules())
    config.check_rgb_statistics(cfg)
    config.check_world_size(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    method = get_method(cfg["method"]["name"])
    cfg["method"] = {"name": method.name, **method.validate_config(cfg["method"])}
    if (cfg["data"]["mixup"] or cfg["data"]["cutmix"]) and not method.soft_targets:
        raise ConfigError(f"data.mixup / data.cutmix need a loss that takes soft targets (ce, logit_adjusted, "
                          f"balanced_softmax, class_balanced, ldam_drw); method {method.name!r} contrasts its batch")
    return cfg
