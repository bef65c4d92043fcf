"""Long-tailed subsampling by true label (LDAM/RoLT/TABASCO protocol)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

PROFILES = ("exp", "step")


def longtail_counts(n_max: int, num_classes: int, imbalance_ratio: float, profile: str = "exp") -> list[int]:
    """Per-class sample counts of a long-tailed profile.

    ``exp``: ``n_c = floor(n_max * rho ** (-c / (C - 1)))`` for class index ``c``.
    ``step``: the first ``floor(C/2)`` classes keep ``n_max``, the rest get ``floor(n_max / rho)``.

    Parameters
    ----------
    n_max : int
        Size of the largest (first) class.
    num_classes : int
        Number of classes ``C``.
    imbalance_ratio : float
        ``rho = n_max / n_min`` (>= 1; 1 gives a balanced set).
    profile : {"exp", "step"}

    Returns
    -------
    list[int]
        ``C`` counts, non-increasing in the class index.

    Examples
    --------
    >>> sum(longtail_counts(5000, 10, 100))  # CIFAR-10-LT, rho = 100
    12406
    """
    if not isinstance(n_max, (int, np.integer)) or n_max < 1:
        raise InputError(f"n_max must be a positive integer, got {n_max!r}")
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise InputError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not (isinstance(imbalance_ratio, (int, float, np.number)) and math.isfinite(imbalance_ratio)):
        raise InputError(f"imbalance_ratio must be a finite number >= 1, got {imbalance_ratio!r}")
    if imbalance_ratio < 1:
        raise InputError(
            f"imbalance_ratio must be >= 1 (rho = n_max / n_min), got {imbalance_ratio}; use 1 for a balanced set"
        )
    if profile == "exp":
        if num_classes == 1:
            return [int(n_max)]
        counts = [int(math.floor(n_max * imbalance_ratio ** (-c / (num_classes - 1)))) for c in range(num_classes)]
    elif profile == "step":
        half = num_classes // 2
        counts = [int(n_max)] * half + [int(math.floor(n_max / imbalance_ratio))] * (num_classes - half)
    else:
        raise InputError(f"unknown long-tail profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    if min(counts) < 1:
        raise InputError(
            f"imbalance_ratio {imbalance_ratio} with n_max {n_max} leaves a class with zero samples "
            f"(counts {counts}); lower the ratio or raise n_max"
        )
    return counts


def longtail_indices(labels: np.ndarray, counts: list[int], seed: int) -> np.ndarray:
    """Indices of a subsample holding ``counts[c]`` samples of each true class ``c``.

    Samples of each class are drawn without replacement from a permutation seeded by
    ``seed``; the result is sorted so that the subsample keeps the source order.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts = []
    for c, n in enumerate(counts):
        pool = np.flatnonzero(labels == c)
        if len(pool) < n:
            raise InputError(
                f"class {c} has {len(pool)} samples but the long-tail profile asks for {n}; "
                "lower n_max (data.n_max) or use a larger dataset"
            )
        parts.append(rng.permutation(pool)[:n])
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
