"""Training methods, each a registry entry (see :mod:`dsink.methods.base`)."""

from . import ce, combined, distill, dividemix, dsink, imbalance, noise, rolt, sfa, tabasco  # noqa: F401  (registers)
from .base import (
    METHOD_REGISTRY,
    ROLES,
    Method,
    MethodContext,
    TrainerView,
    build_method,
    get_method,
    list_methods,
    method_info,
    method_params,
    register_method,
)

__all__ = ["METHOD_REGISTRY", "ROLES", "Method", "MethodContext", "TrainerView", "build_method", "get_method",
           "list_methods", "method_info", "method_params", "register_method"]
