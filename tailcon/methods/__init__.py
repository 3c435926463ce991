"""Methods: one small file each, composing losses, models and memory; looked up by name.

Every module of this package is imported here, and importing one registers its methods
(``@register``): a new method is a new file, nothing else in the package changes.
"""

import importlib
import pkgutil

from .base import METHODS, Method, build_method, get_method, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method", "build_method", "get_method", "register"]
