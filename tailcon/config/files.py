"""Config files: reading one, its ``_base_`` chain, and finding shipped configs by name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .rules import ConfigError, suggest
from .tree import merge
from .yaml_io import yaml_load


def read_file(path: Path) -> dict[str, Any]:
    """One file's own mapping (``_base_`` not followed), with errors naming the file."""
    try:
        data = yaml_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {_where(path, e)}: invalid YAML: {_yaml_problem(e)}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path}: not UTF-8 text ({e})") from None
    except ConfigError as e:
        raise ConfigError(f"config {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _where(path: Path, error: yaml.YAMLError) -> str:
    """``FILE:LINE:COLUMN`` of a YAML error (1-based, as editors count), or the file alone."""
    mark = getattr(error, "problem_mark", None)
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's one-line reason (its message quotes the text and the ``<unicode string>`` it read)."""
    problem = getattr(error, "problem", None)
    context = getattr(error, "context", None)
    text = f"{problem}" + (f" ({context})" if context else "") if problem else str(error).splitlines()[0]
    return text


def base_chain(path: str | os.PathLike) -> list[tuple[Path, dict[str, Any]]]:
    """[(file, its own mapping without ``_base_``)] for the file, then its ``_base_``, then that
    one's, ...: the one walk of a chain, which :func:`load_yaml` and the hyperparameter tables use."""
    path = Path(path)
    chain: list[tuple[Path, dict[str, Any]]] = []
    seen: list[str] = []
    while True:
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        if str(path.resolve()) in seen:
            raise ConfigError(f"config {path}: circular _base_ chain {' -> '.join(seen)}")
        seen.append(str(path.resolve()))
        data = read_file(path)
        base = data.pop("_base_", None)
        chain.append((path, data))
        if base is None:
            return chain
        path = base_path(path, base)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config, following ``_base_`` (a path relative to the file, else a shipped
    config's name) recursively; a file that names another method than its base drops the base's
    method keys."""
    merged: dict[str, Any] = {}
    for _, data in reversed(base_chain(path)):
        child_method = (data.get("method") or {}).get("name")
        if child_method is not None and child_method != (merged.get("method") or {}).get("name"):
            merged = {k: v for k, v in merged.items() if k != "method"}  # its keys belong to the other method
        merged = merge(merged, data)
    return merged


def base_path(path: Path, base: Any) -> Path:
    """The file a config's ``_base_`` names: a path relative to the config first, then a shipped
    config's name (pip users cannot know where site-packages is): ``_base_: cifar10_lt/bcl``."""
    relative = path.parent / str(base)
    if relative.is_file():
        return relative
    try:
        return locate(str(base))
    except ConfigError:
        raise ConfigError(f"config {path}: _base_ {base!r} is neither a file next to it ({relative}) nor a "
                          f"shipped config{suggest(str(base), shipped_config_names())}") from None


def config_name(path: str | os.PathLike) -> str:
    """``configs/cifar10_lt/bcl.yaml`` -> ``cifar10_lt-bcl``."""
    p = Path(path)
    return f"{p.parent.name}-{p.stem}" if p.parent.name not in ("", ".", "configs") else p.stem


def shipped_config_dir() -> Path:
    """The configs installed with tailcon: ``<dataset>/<method>.yaml``."""
    return Path(__file__).resolve().parent.parent / "configs"


def shipped_config_names() -> list[str]:
    root = shipped_config_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def locate(path: str | os.PathLike) -> Path:
    """A config file: ``path`` itself when it exists, else the shipped config of that name
    (``cifar10_lt/bcl``, ``cifar10_lt/bcl.yaml`` or ``configs/cifar10_lt/bcl.yaml`` from any
    directory)."""
    p = Path(path)
    if p.is_file():
        return p
    name = p.as_posix()
    name = name[:-5] if name.endswith(".yaml") else name
    name = name[len("configs/"):] if name.startswith("configs/") else name
    shipped = shipped_config_dir() / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"config file not found: {path} (nor a shipped config named {name!r}"
                      f"{suggest(name, shipped_config_names())}; `tailcon configs` lists them)")
