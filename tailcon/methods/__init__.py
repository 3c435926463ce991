"""Methods: one small file each, composing losses, models and memory; looked up by name."""

from . import classification  # noqa: F401  (registers the baselines)
from .base import METHODS, Method, get_method, register

__all__ = ["METHODS", "Method", "get_method", "register"]
