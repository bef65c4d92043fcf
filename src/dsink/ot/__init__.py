"""Optimal transport: the Sinkhorn solver and D-SINK's surrogate labels."""

from .sinkhorn import SinkhornResult, sinkhorn
from .surrogate import surrogate_labels

__all__ = ["SinkhornResult", "sinkhorn", "surrogate_labels"]
