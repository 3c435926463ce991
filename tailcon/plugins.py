"""Building on tailcon without forking it: your own modules register methods, backbones and
datasets with the decorators tailcon's own use (``tailcon.methods.register``,
``tailcon.models.register_backbone``, ``tailcon.data.register_dataset``).

* ``custom_imports: [module, ...]`` in a config (or ``"custom_imports=[my_mod]"`` on the command
  line) imports those modules before anything else is resolved; they are found next to the config
  file first, then on ``sys.path``. A run records the list in its ``config.yaml``, and using the
  finished run (``eval``, ``predict``, ``export``, ``report``, ``tailcon.load``) imports them again
  from ``sys.path`` only, never from inside the run directory, and says which it imported.
* An installed package can declare entry points in the group ``tailcon.plugins``; each is loaded
  once, the first time a config is resolved.

A module that cannot be found is a one-line error naming it. docs/extending.md is a worked example.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
from pathlib import Path
from typing import Iterable, Optional

from .errors import TailconError

ENTRY_POINT_GROUP = "tailcon.plugins"
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_entry_points_loaded = False
_announced: set[str] = set()


class PluginError(TailconError, ValueError):
    """A custom module or plugin cannot be imported; the message names it."""


def load_entry_points() -> list[str]:
    """Load every ``tailcon.plugins`` entry point of the installed packages (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return []
    _entry_points_loaded = True
    try:
        found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # Python 3.9: a dict of groups
        found = importlib.metadata.entry_points().get(ENTRY_POINT_GROUP, [])
    names = []
    for ep in found:
        try:
            ep.load()
        except Exception as e:
            raise PluginError(f"tailcon plugin {ep.name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}") from e
        names.append(ep.name)
    return names


def import_modules(modules: Iterable[str], next_to: Optional[Path] = None, announce: bool = False) -> list[str]:
    """Import ``modules`` (``custom_imports``): from ``next_to`` (a config's folder) first, then
    ``sys.path``. ``announce``: print each module the first time it is imported for a run."""
    imported = []
    for name in modules:
        if not isinstance(name, str) or not MODULE_NAME.fullmatch(name):
            raise PluginError(f"custom_imports: {name!r} is not a module name (e.g. my_methods or pkg.module)")
        added = next_to is not None and str(next_to) not in sys.path
        if added:
            sys.path.insert(0, str(next_to))
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and name.startswith(e.name) and (e.name == name or name[len(e.name)] == "."):
                where = (f"{next_to} or sys.path" if next_to is not None
                         else "sys.path (a run's own folder is never searched)")
                raise PluginError(f"custom_imports: no module named {name!r} in {where}") from None
            raise PluginError(f"custom_imports: module {name!r} needs {e.name!r}, which is not installed") from None
        finally:
            if added:
                sys.path.remove(str(next_to))
        imported.append(name)
        if announce and name not in _announced:
            _announced.add(name)
            print(f"tailcon: imported {name} (custom_imports of the run)", file=sys.stderr)
    return imported
