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
    overrides = list(overrides)
    cfg = validate(config.compose(path, overrides, extra=extra))
    if cfg["train"]["scale_schedule"] and cfg["train"]["scaled_from"] is None:
        cfg = scale_schedule(cfg, path, overrides, extra)
    return withhold_paper_figures(cfg)


def schedule_keys(cfg: Mapping[str, Any]) -> list[str]:
    """The dotted keys of ``cfg`` counted in epochs: warm-up, evaluation cadence, the step
    schedule's milestones (the step schedule's only), and the method's own switches
    (``Method.epoch_keys``)."""
    method = get_method(cfg["method"]["name"])
    milestones = ["optim.milestones"] if cfg["optim"]["schedule"] == "step" else []  # other schedules ignore them
    return ["optim.warmup_epochs", *milestones, "train.eval_every", *(f"method.{k}" for k in method.epoch_keys)]


def scale_schedule(cfg: dict[str, Any], path: Optional[str | os.PathLike], overrides: list[str],
                   extra: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """``train.scale_schedule``: the recipe at another ``train.epochs`` with its shape kept. Each
    epoch-valued key the command line does not set itself becomes ``round(value * new / old)``
    (Python's round; at least 1 where the recipe's value is at least 1), ``old`` being the epochs
    of the config without the ``train.epochs`` override; ``train.scaled_from`` records ``old``."""
    given = config.flatten(config.parse_overrides(overrides))
    recipe = validate(config.compose(path, [o for o in overrides if not o.startswith("train.epochs=")], extra=extra))
    old, new = int(recipe["train"]["epochs"]), int(cfg["train"]["epochs"])
    if old == new:
        return cfg

    def scaled(value: int) -> int:
        return max(1, round(value * new / old)) if value >= 1 else value

    for key in schedule_keys(cfg):
        value = config.get(recipe, key)
        if key in given or value is None:
            continue
        config.set_dotted(cfg, key, [scaled(int(v)) for v in value] if isinstance(value, list) else scaled(int(value)))
    cfg["train"]["scaled_from"] = old
    return cfg


def schedule_warnings(cfg: Mapping[str, Any]) -> list[str]:
    """Schedule switches a run never reaches (at or past ``train.epochs``): a shortened recipe whose
    warm-up, lr drops or method switches stayed where the long one had them."""
    epochs = int(cfg["train"]["epochs"])
    out = []
    for key in schedule_keys(cfg):
        if key == "train.eval_every":
            continue
        value = config.get(cfg, key)
        late = [v for v in (value if isinstance(value, list) else [value]) if v is not None and int(v) >= epochs]
        if late and not (key == "method.epoch_offset" and not int(value)):
            out.append(f"{key}={value} is at or past the run's end (train.epochs={epochs}): "
                       + ("the lr never drops there" if key == "optim.milestones" else
                          "the warm-up never ends" if key == "optim.warmup_epochs" else "that switch never happens"))
    return out


# recipe keys that change no trained weight's expected value: another seed or evaluation cadence is
# the same recipe as far as a published figure (a mean over seeds) is concerned
SAME_RECIPE_KEYS = frozenset({"seed", "train.eval_every"})


def recipe_differences(reference: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[str]:
    """``key old -> new`` for every recipe key (the schema's ``recipe`` keys and the method's own)
    whose value in ``cfg`` differs from ``reference``'s (both resolved configs)."""
    ref, now = config.flatten(reference), config.flatten(cfg)
    kinds = {k.name: k.kind for k in config.SCHEMA}
    out = []
    for key in sorted(set(ref) | set(now)):
        if key in SAME_RECIPE_KEYS or kinds.get(key, config.RECIPE if key.startswith("method.") else None) \
                != config.RECIPE:
            continue
        if key == "model.pretrained" and ref.get("model.require_pretrained") and ref.get(key) is None:
            continue  # the protocol asks the user for these weights: where they lie is no recipe
        if ref.get(key) != now.get(key):
            out.append(f"{key} {_short(ref.get(key))} -> {_short(now.get(key))}")
    return out


def _short(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def withhold_paper_figures(cfg: dict[str, Any]) -> dict[str, Any]:
    """A published figure belongs to one recipe (``paper.config``'s): when this config's recipe
    differs, its ``paper.*`` figures are removed and ``paper.withheld`` names the keys that differ,
    so no report compares a run with a figure it never claimed (a 40-epoch run with a 200-epoch
    paper result). Idempotent."""
    paper = cfg["paper"]
    if paper.get("top1") is None or not paper.get("config"):
        return cfg
    try:
        reference = validate(config.compose(paper["config"]))
    except ConfigError as e:
        differences = [f"its recipe {paper['config']} cannot be read ({e})"]
    else:
        differences = recipe_differences(reference, cfg)
    if differences:
        for figure in config.PAPER_FIGURES:
            config.set_dotted(cfg, figure, None)
        paper["withheld"] = f"the recipe differs from {paper['config']}'s: " + "; ".join(differences)
    return cfg


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
