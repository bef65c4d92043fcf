"""Optimal transport: the Sinkhorn solver, Newton's method on the semi-dual, the plain reference and D-SINK's
surrogate labels."""

from .newton import semidual_newton
from .reference import sinkhorn_reference
from .sinkhorn import SinkhornResult, sinkhorn
from .surrogate import surrogate_labels, surrogate_problem

__all__ = ["SinkhornResult", "semidual_newton", "sinkhorn", "sinkhorn_reference", "surrogate_labels", "surrogate_problem"]
