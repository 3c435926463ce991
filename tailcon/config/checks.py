"""Checking a config against the schema, and composing one from defaults, a file and overrides.

What needs the registries (the method's keys, dataset and backbone names) is checked one layer up,
by :func:`tailcon.resolution.validate`; everything here knows only the schema.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from .. import plugins
from .files import base_chain, config_name, load_yaml, locate, shipped_config_dir
from .rules import ConfigError, Rule, number_in_bounds, suggest
from .schema import DEFAULTS, KEYS, SCHEMA, Key, expected_types, rule_of
from .tree import flatten, get, merge, parse_overrides

# the value rules the schema knows by itself (registry-backed keys are added by tailcon.resolution)
VALUE_RULES: dict[str, Rule] = {k.name: rule for k in SCHEMA if (rule := rule_of(k.name)) is not None}

PAPER_FIGURES = ("paper.top1", "paper.many", "paper.medium", "paper.few")


def check_keys(cfg: Mapping[str, Any], defaults: Mapping[str, Any], where: str = "") -> None:
    """Raise :class:`ConfigError` for a key of ``cfg`` that has no default, or a value of the
    wrong type (a string for a number or a bool: ``"False"`` must never mean True). ``defaults``:
    :data:`DEFAULTS`, or a method's (with ``where="method."``)."""
    valid = flatten(defaults)
    sections = {k.rsplit(".", i)[0] for k in valid for i in range(1, k.count(".") + 1)}
    for key, value in flatten(cfg).items():
        if key in valid:
            _check_type(f"{where}{key}", value, valid[key])
        elif key in sections and value in ({}, None):
            continue
        elif not key.startswith("method."):
            raise ConfigError(f"unknown config key '{where}{key}'{suggest(key, valid)}")


def _check_type(name: str, value: Any, default: Any) -> None:
    schema_key = KEYS.get(name)
    if value is None:
        if default is not None and not (schema_key is not None and schema_key.nullable):
            raise ConfigError(f"config key '{name}' has an empty value; it needs one (default: "
                              f"{name.rsplit('.', 1)[-1]}: {default!r})")
        return
    if schema_key is not None:
        expected = expected_types(schema_key)
    else:  # a method's key: its default's type
        expected = expected_types(Key(name, default))
    if expected is None:
        return
    ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
    if not ok:
        names = "/".join(t.__name__ for t in expected)
        raise ConfigError(f"config key '{name}' must be {names}, got {value!r} ({type(value).__name__})")


def check_values(cfg: Mapping[str, Any], rules: Mapping[str, Rule], where: str = "") -> None:
    """Raise :class:`ConfigError` naming the first key whose value breaks its rule (None is
    always allowed: it means "the default" or "off"), or a number out of any computation's range."""
    for key, value in flatten(cfg).items():
        rule = rules.get(key)
        expected = rule(value) if rule is not None and value is not None else None
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            expected = expected or number_in_bounds(item)
        if expected:
            raise ConfigError(f"config key '{where}{key}' must be {expected}, got {value!r}")


def check_rgb_statistics(cfg: Mapping[str, Any]) -> None:
    for key in ("mean", "std"):  # images are always read as RGB
        value = cfg["data"][key]
        if value is not None and len(value) != 3:
            raise ConfigError(f"config key 'data.{key}' must have 3 values, one per RGB channel, got {value!r}")


def check_world_size(cfg: Mapping[str, Any], world_size: int) -> None:
    """Under torchrun the global batch is split evenly over the processes, and each process's
    share into whole BatchNorm groups (``model.bn_batch``)."""
    batch = int(cfg["data"]["batch_size"])
    if world_size > 1 and batch % world_size:
        raise ConfigError(f"data.batch_size={batch} is the global batch; it must be divisible "
                          f"by the number of processes ({world_size})")
    group = cfg["model"]["bn_batch"]
    if group is not None:
        if cfg["model"]["sync_bn"]:
            raise ConfigError("model.bn_batch (BatchNorm over groups of a device's batch) and model.sync_bn=true "
                              "(over the global batch) exclude each other: set one")
        per_device = batch // world_size
        if per_device > group and per_device % group:
            raise ConfigError(f"model.bn_batch={group} must divide each process's batch ({per_device} = "
                              f"data.batch_size {batch} / {world_size} processes)")


def compose(path: str | os.PathLike | None, overrides: Iterable[str] = (), *,
            extra: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Defaults <- config file (with ``_base_``) <- ``extra`` <- ``key=value`` overrides, keys and
    types checked, ``custom_imports`` imported. Values are checked by :func:`tailcon.resolution.validate`."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = locate(path)
        file_cfg = load_yaml(path)
        for file, data in base_chain(path):  # each file on its own: an error names the file that has the key
            try:
                check_keys(data, DEFAULTS)
            except ConfigError as e:
                raise ConfigError(f"config {file}: {e}") from None
        cfg = merge(cfg, file_cfg)
        if get(file_cfg, "paper.top1") is not None and not get(file_cfg, "paper.config"):
            cfg["paper"]["config"] = paper_config(path)
        if not file_cfg.get("name"):
            cfg["name"] = config_name(path)
    if extra:
        cfg = merge(cfg, extra)
    over = parse_overrides(overrides)
    check_keys(over, DEFAULTS)
    new_method = get(over, "method.name")
    if new_method is not None and new_method != get(cfg, "method.name"):
        cfg["method"] = {}  # the file's method keys belong to the method it named
    if any(k in PAPER_FIGURES for k in flatten(over)):
        cfg["paper"]["config"] = None  # figures given on the command line are the user's own claim
    cfg = merge(cfg, over)
    if not cfg["name"]:
        cfg["name"] = "run"
    plugins.load_entry_points()
    plugins.import_modules(cfg["custom_imports"], next_to=Path(path).resolve().parent if path is not None else None)
    return cfg


def complete(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config (a run's, a checkpoint's), with the keys added since at their defaults; the
    run's ``custom_imports`` are imported from ``sys.path`` (never from the run directory), so its
    method, backbone and dataset are known again."""
    out = merge(DEFAULTS, cfg)
    plugins.load_entry_points()
    plugins.import_modules(out["custom_imports"], announce=True)
    return out


def paper_config(path: str | os.PathLike) -> str:
    """The file of ``path``'s ``_base_`` chain (nearest first) that sets the published figures, as
    a shipped config's name (``cifar10_lt/ldam_drw``) or a path: the recipe those figures are for."""
    for file, data in base_chain(path):
        if get(data, "paper.top1") is not None:
            try:
                return Path(file).resolve().relative_to(shipped_config_dir()).with_suffix("").as_posix()
            except ValueError:
                return str(Path(file).resolve())
    return str(path)
