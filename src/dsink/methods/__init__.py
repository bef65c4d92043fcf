"""Training methods, each a registry entry (see :mod:`dsink.methods.base`)."""

from . import ce, combined, dividemix, dsink, imbalance, noise  # noqa: F401  (registers)
from .base import METHODS, ROLES, Method, MethodContext, build_method, register_method

__all__ = ["METHODS", "ROLES", "Method", "MethodContext", "build_method", "register_method"]
