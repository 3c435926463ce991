"""Configuration: the schema of every key, YAML files with ``_base_`` inheritance, dotted
``key=value`` overrides, and the checks that need nothing but the schema.

A config is a nested dict. Every valid key is in :data:`SCHEMA` (its default, type, value rule and
kind), except the keys under ``method.``, which belong to the chosen method and are checked by it
(:meth:`tailcon.methods.Method.validate_config`). A key that is not known is an error that names
it and the closest valid key, so a typo never silently trains something else.

This package imports nothing of tailcon's but :mod:`tailcon.plugins`; resolving a config against
the method, dataset and backbone registries is :func:`tailcon.resolution.resolve`.
"""

from .checks import (PAPER_FIGURES, VALUE_RULES, check_keys, check_rgb_statistics, check_values, check_world_size, complete,
                     compose, paper_config)
from .files import base_chain, base_path, config_name, load_yaml, locate, read_file, shipped_config_dir, \
    shipped_config_names
from .rules import MAX_MAGNITUDE, ConfigError, Rule, integer, list_of, number, number_in_bounds, one_of, suggest
from .schema import DEFAULTS, KEYS, PLUMBING, RECIPE, SCHEMA, Key, choices, keys_where, rule_of
from .tree import dump, flatten, get, merge, parse_overrides, parse_value, plain, set_dotted
from .yaml_io import MAX_CONFIG_VALUES, yaml_load

__all__ = ["PAPER_FIGURES", "paper_config", "VALUE_RULES", "check_keys", "check_rgb_statistics", "check_values", "check_world_size", "complete",
           "compose", "base_chain", "base_path", "config_name", "load_yaml", "locate", "read_file",
           "shipped_config_dir", "shipped_config_names", "MAX_MAGNITUDE", "ConfigError", "Rule", "integer",
           "list_of", "number", "number_in_bounds", "one_of", "suggest", "DEFAULTS", "KEYS", "PLUMBING", "RECIPE",
           "SCHEMA", "Key", "choices", "keys_where", "rule_of", "dump", "flatten", "get", "merge",
           "parse_overrides", "parse_value", "plain", "set_dotted", "MAX_CONFIG_VALUES", "yaml_load"]

_MOVED = {"resolve": "tailcon.resolution.resolve", "validate": "tailcon.resolution.validate"}


def __getattr__(name: str):
    # resolving needs the registries above this package: say where it went instead of a bare AttributeError
    if name in _MOVED:
        raise AttributeError(f"tailcon.config.{name} is now {_MOVED[name]} (it checks a config against the "
                             "method, dataset and backbone registries, which sit above tailcon.config)")
    raise AttributeError(f"module 'tailcon.config' has no attribute {name!r}")
