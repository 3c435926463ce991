"""Where each hyperparameter of a shipped config comes from.

Every config file carries a ``# source: ...`` line naming the source of the values it sets (a
paper table, a released code path, a third-party recipe, or an assumption); a key whose line
ends in a comment with a bracketed tag (``# [ASSUME] ...``, ``# [code] ...``) names its own.
A value no file sets is tailcon's default: for a method key the comment beside it in the
method's ``defaults`` (which records the authors' value where there is one).

``tailcon config CONFIG --sources`` prints the table; ``docs/hyperparameters.md`` is generated
from it for every shipped config (``python docs/hyperparameters.py``; a test keeps it current).
"""

from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .. import config, resolution
from ..methods import get_method

# besides every method key: the keys every table lists, and those it never lists (the schema says which)
RECIPE_KEYS = config.keys_where(listed=True)
_PLUMBING = frozenset(config.keys_where(kind=config.PLUMBING))
_SOURCE_LINE = re.compile(r"^#\s*source:\s*(.+?)\s*$", re.IGNORECASE)
_KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][\w]*):(.*)$")


@dataclass(frozen=True)
class Hyperparameter:
    key: str
    value: Any
    source: str
    file: str | None  # the config file that sets it; None: tailcon's default


def _file_annotations(path: Path) -> tuple[str | None, dict[str, str]]:
    """(the file's ``# source:`` text, {dotted key: its own bracketed trailing comment})."""
    default, own, stack = None, {}, []
    for line in path.read_text().splitlines():
        m = _SOURCE_LINE.match(line)
        if m:
            default = m.group(1)
            continue
        m = _KEY_LINE.match(line)
        if not m:
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, key)]
        comment = rest.split(" #", 1)[1].strip() if " #" in rest else ""
        if comment.startswith("["):
            own[".".join(k for _, k in stack)] = comment
    return default, own


@functools.lru_cache(maxsize=None)
def _method_default_comments(method_cls) -> dict[str, str]:
    """``"key": value,  # comment`` lines of the method's class body (and its mixins')."""
    out: dict[str, str] = {}
    for cls in reversed(method_cls.__mro__):
        try:
            text = inspect.getsource(cls)
        except (OSError, TypeError):
            continue
        for key, comment in re.findall(r'"(\w+)":[^#\n]*#\s*(.+)$', text, flags=re.MULTILINE):
            out[key] = comment.strip()
    return out


def hyperparameter_sources(path: str | Path, overrides: Sequence[str] = ()) -> list[Hyperparameter]:
    """Every method key and recipe key of the resolved config ``path`` (a file or a shipped
    name) with ``key=value`` ``overrides``, each with its source."""
    path = config.locate(path)
    cfg = config.flatten(resolution.resolve(path, overrides))
    overridden = set(config.flatten(config.parse_overrides(overrides)))
    method_name = cfg["method.name"]
    sets: list[tuple[Path, dict, str | None, dict]] = []
    for f, mapping in config.base_chain(path):
        f = f.resolve()
        own = config.flatten(mapping)
        resolved_method = (config.load_yaml(f).get("method") or {}).get("name")
        if resolved_method != method_name:  # a base written for another method: its method keys are dropped
            own = {k: v for k, v in own.items() if not k.startswith("method.")}
        default, tags = _file_annotations(f)
        sets.append((f, own, default, tags))
    method_cls = get_method(method_name)
    method_notes = _method_default_comments(method_cls)
    keys = [k for k in cfg if k.startswith("method.")] + [k for k in RECIPE_KEYS if k in cfg]
    keys += sorted(k for _, own, _, _ in sets for k in own if k not in keys and k in cfg and k not in _PLUMBING)
    keys += sorted(k for k in overridden if k not in keys and k in cfg and k not in _PLUMBING)
    out = []
    for key in dict.fromkeys(keys):
        if not _applies(key, cfg):
            continue
        if key in overridden:
            out.append(Hyperparameter(key, cfg[key], "command line", None))
            continue
        if key == "data.name":
            out.append(Hyperparameter(key, cfg[key], "the dataset", None))
            continue
        setter = next(((f, d, t) for f, own, d, t in sets if key in own), None)
        if setter is not None:
            f, default, tags = setter
            source = tags.get(key) or default or "(no source recorded)"
            out.append(Hyperparameter(key, cfg[key], source, _relative(f)))
        else:
            note = method_notes.get(key.split(".", 1)[1]) if key.startswith("method.") else None
            out.append(Hyperparameter(key, cfg[key], f"tailcon default{': ' + note if note else ''}", None))
    return out


def _applies(key: str, cfg: dict[str, Any]) -> bool:
    """Keys that the rest of the config makes irrelevant are left out (milestones of a cosine
    schedule, the scale of a linear classifier, the global view of a method with its own)."""
    if key in ("optim.milestones", "optim.gamma"):
        return cfg["optim.schedule"] == "step"
    if key == "optim.min_lr_ratio":
        return cfg["optim.schedule"] == "cosine_end"
    if key == "model.cosine_scale":
        return cfg["model.classifier"] == "cosine"
    if key == "data.train_augment":
        return not any(k.endswith(("view", "views")) for k in cfg if k.startswith("method."))
    return True


def _relative(f: Path) -> str:
    parts = f.resolve().parts
    return "/".join(parts[parts.index("configs") + 1:]) if "configs" in parts else str(f)


def shipped_configs() -> list[tuple[str, Path]]:
    """[(``dataset/method``, path)] of the configs installed with tailcon, sorted."""
    root = config.shipped_config_dir()
    return [(f"{p.parent.name}/{p.stem}", p) for p in sorted(root.glob("*/*.yaml"))]


TAG_LEGEND = """\
The tag in brackets says what kind of source a value has: **[code]**: the authors' released code or
scripts (**[G-code ...]** / **[P-code ...]**: the GPaCo / PaCo code, dvlab-research/Parametric-Contrastive-Learning,
the file named); **[README]**: the authors' README; **[PAPER-v]**: a paper's table, checked against a
second source; **[PAPER-r]**: a paper's figure or wording recalled, not checked against the PDF;
**[3P]**: a third-party code's recipe (named); **[recalled]**: a baseline's original paper or code,
from memory; **[protocol]**: the dataset's usual evaluation protocol; **[eval cadence]**: how often
evaluation runs (changes no weight); **[unrecovered]**: the authors released no value for it;
**[ASSUME]**: chosen here where no source gives the value (the config's header says why). *tailcon
default*: no file sets the key; the note beside it is the comment next to the default in the code."""


def sources_table(path: str | Path, overrides: Sequence[str] = ()) -> str:
    """A Markdown table: key | value | source | set in."""
    rows = ["| key | value | source | set in |", "|---|---|---|---|"]
    for h in hyperparameter_sources(path, overrides):
        value = config.plain(h.value)
        rows.append(f"| `{h.key}` | `{value}` | {h.source.replace('|', '/')} | {h.file or '-'} |")
    return "\n".join(rows)
