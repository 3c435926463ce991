"""YAML as configs are written: ``1e-3`` is a float, and aliases cannot expand without bound."""

from __future__ import annotations

import re
from typing import Any, Mapping

import yaml

from .rules import ConfigError


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` / ``5e-4`` as floats (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)

MAX_CONFIG_VALUES = 100_000  # a config holds a few hundred values; aliases must not expand past this


def yaml_load(text: str) -> Any:
    """Parse YAML; a document whose aliases expand to more than :data:`MAX_CONFIG_VALUES` values
    (a "billion laughs" of nested anchors, a few hundred bytes that grow past gigabytes when
    walked) is refused before anything walks it."""
    data = yaml.load(text, Loader=_Loader)
    _check_expanded_size(data)
    return data


def _check_expanded_size(data: Any) -> None:
    stack, seen = [data], 0
    while stack:  # counts every value as often as aliases repeat it, stopping at the bound
        node = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_VALUES:
            raise ConfigError(f"the YAML expands to more than {MAX_CONFIG_VALUES} values (nested aliases?); "
                              "a config is a few hundred keys: write it without such aliases")
        if isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
