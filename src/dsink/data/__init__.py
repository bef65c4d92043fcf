"""Benchmark data: sources, long-tailed subsampling and label noise (see docs/reference.md, "Data protocols").

Datasets and noise modes are registries: ``list_datasets()`` / ``register_dataset``,
``list_noise_modes()`` / ``register_noise_mode`` (and ``dsink list datasets|noise-modes``).
"""

from .builder import DataBundle, LabelSet, build_data, cached_labels, describe, make_labels
from .longtail import PROFILES, longtail_counts, longtail_indices
from .datasets import (
    DATASET_REGISTRY,
    dataset_info,
    get_dataset,
    list_datasets,
    load_dataset,
    load_source,
    register_dataset,
)
from . import realnoise  # noqa: F401  (registers clothing1m, webvision, webvision_imagenet, food101n)
from .noise import (
    NOISE_MODE_REGISTRY,
    SEMANTIC_MAPS,
    NoiseReport,
    canonical_noise_mode,
    get_noise_mode,
    inject_noise,
    list_noise_modes,
    noise_mode_info,
    noise_report,
    register_noise_mode,
)
from .images import ImageFiles, load_image_folder
from .sources import Source, load_cifar, load_cifar_n, load_fashion_mnist, load_npz, read_idx

__all__ = [
    "DATASET_REGISTRY", "DataBundle", "ImageFiles", "load_image_folder", "LabelSet", "NOISE_MODE_REGISTRY", "NoiseReport", "PROFILES",
    "SEMANTIC_MAPS", "Source", "build_data", "cached_labels", "canonical_noise_mode", "dataset_info", "describe",
    "get_dataset", "get_noise_mode", "inject_noise", "list_datasets", "list_noise_modes", "load_cifar",
    "load_cifar_n", "load_dataset", "load_fashion_mnist", "load_npz", "load_source", "longtail_counts",
    "longtail_indices", "make_labels", "noise_mode_info", "noise_report", "read_idx", "register_dataset",
    "register_noise_mode",
]
