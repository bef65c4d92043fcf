"""Optimal transport: the Sinkhorn solver, its plain reference and D-SINK's surrogate labels."""

from .reference import sinkhorn_reference
from .sinkhorn import SinkhornResult, sinkhorn
from .surrogate import surrogate_labels, surrogate_problem

__all__ = ["SinkhornResult", "sinkhorn", "sinkhorn_reference", "surrogate_labels", "surrogate_problem"]
