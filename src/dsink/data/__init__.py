"""Benchmark data: sources, long-tailed subsampling and label noise (SPEC §2)."""

from .builder import DataBundle, LabelSet, build_data, cached_labels, describe, make_labels
from .longtail import PROFILES, longtail_counts, longtail_indices
from .noise import (
    NOISE_ALIASES,
    NOISE_MODES,
    SEMANTIC_MAPS,
    NoiseReport,
    canonical_noise_mode,
    inject_noise,
    noise_report,
)
from .sources import DATASETS, Source, load_cifar, load_cifar_n, load_fashion_mnist, load_npz, load_source, read_idx

__all__ = [
    "DATASETS", "DataBundle", "LabelSet", "NOISE_ALIASES", "NOISE_MODES", "NoiseReport", "PROFILES",
    "SEMANTIC_MAPS", "Source", "build_data", "cached_labels", "canonical_noise_mode", "describe",
    "inject_noise", "load_cifar", "load_cifar_n", "load_fashion_mnist", "load_npz", "load_source",
    "longtail_counts", "longtail_indices", "make_labels", "noise_report", "read_idx",
]
