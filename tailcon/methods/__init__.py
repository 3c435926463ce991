"""Methods: one small file each, composing losses, models and memory; looked up by name."""

from . import bcl, classification, crt, dscl, hybrid, paco, proco, rescom, supcon  # noqa: F401  (importing registers them)
from .base import METHODS, Method, build_method, get_method, register

__all__ = ["METHODS", "Method", "build_method", "get_method", "register"]

