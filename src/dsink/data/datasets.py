"""The dataset registry: every dataset name is one loader registered here (``dsink list datasets``).

A loader takes the run's :class:`~dsink.config.DataConfig` and returns a
:class:`~dsink.data.sources.Source` (train/test arrays with true or given labels). Config validation,
``dsink data describe``, training and ``dsink list datasets`` all read this registry, so a new
dataset is one decorated function::

    @register_dataset("toy", description="two Gaussian blobs")
    def load_toy(cfg: DataConfig) -> Source:
        ...
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

from ..config import DataConfig, add_default_hook, add_hash_hook
from ..errors import InputError
from ..registry import Registry
from .images import load_image_folder
from .sources import Source, load_cifar, load_fashion_mnist, load_npz

DatasetLoader = Callable[[DataConfig], Source]
DATASET_REGISTRY: Registry[DatasetLoader] = Registry("dataset")


def register_dataset(name: str, loader: DatasetLoader | None = None, *, description: str = "", **info: Any):
    """Register ``loader(cfg: DataConfig) -> Source`` as ``data.dataset: name``; a decorator without ``loader``."""
    return DATASET_REGISTRY.register(name, loader, description=description, **info)


def list_datasets(filter: str | None = None) -> list[str]:
    """Names of the registered datasets, sorted; ``filter``: a shell-style pattern such as ``"cifar*"``."""
    return DATASET_REGISTRY.list(filter)


def get_dataset(name: str) -> DatasetLoader:
    """The loader of a registered dataset; an unknown name is an InputError listing the valid ones."""
    return DATASET_REGISTRY.get(name)


def dataset_info(name: str) -> dict[str, Any]:
    """``name`` and ``description`` of a registered dataset."""
    return DATASET_REGISTRY.info(name)


def load_dataset(cfg: DataConfig) -> Source:
    """The source arrays of ``cfg.dataset``, loaded by its registered loader."""
    return get_dataset(cfg.dataset)(cfg)


def load_source(dataset: str, root: str | None = None, download: bool = False, csv_path: str | None = None) -> Source:
    """Load a dataset by name (see :func:`list_datasets`): :func:`load_dataset` given only the paths."""
    return load_dataset(DataConfig(dataset=dataset, root=root, download=download, csv_path=csv_path))


# --------------------------------------------------------------------------- the built-in datasets
@register_dataset("fashion_mnist", description="Fashion-MNIST, 10 classes of 28x28 grey images (IDX files: "
                  "the Debian package, data.root or data.download=true)")
def _fashion_mnist(cfg: DataConfig) -> Source:
    return load_fashion_mnist(cfg.root, cfg.download)


@register_dataset("cifar10", description="CIFAR-10, 10 classes of 32x32 colour images (torchvision layout under "
                  "data.root, or data.download=true); human noise from CIFAR-10N")
def _cifar10(cfg: DataConfig) -> Source:
    return load_cifar("cifar10", cfg.root, cfg.download)


@register_dataset("cifar100", description="CIFAR-100, 100 classes of 32x32 colour images (torchvision layout "
                  "under data.root, or data.download=true); human noise from CIFAR-100N")
def _cifar100(cfg: DataConfig) -> Source:
    return load_cifar("cifar100", cfg.root, cfg.download)


def _root(cfg: DataConfig) -> str:
    if cfg.root is None:
        raise InputError(f"dataset {cfg.dataset} needs data.root (the .npz file or the image folder)")
    return cfg.root


# A user's data is used as given: its labels are the noisy labels and its class sizes the imbalance. Synthetic noise or
# a long-tailed subsample stays possible when asked for explicitly (data.noise_mode, data.imbalance_ratio).
OWN_DATA_DEFAULTS = {"data": {"noise_mode": "none", "imbalance_ratio": 1}}


@register_dataset("npz", user_data=True, config_defaults=OWN_DATA_DEFAULTS, description="your feature data: data.root names an .npz with X, y, X_test, y_test "
                  "(y_true optional)")
def _npz(cfg: DataConfig) -> Source:
    return load_npz(_root(cfg))


@register_dataset("image_folder", user_data=True, config_defaults=OWN_DATA_DEFAULTS, description="your images: data.root = a folder of class subfolders (or of "
                  "train/, val/, test/ in that layout), or data.root plus data.csv_path, a CSV with columns "
                  "path,label[,split,true_label]; mixed sizes need data.image_size")
def _image_folder(cfg: DataConfig) -> Source:
    return load_image_folder(_root(cfg), cfg.csv_path, image_size=cfg.image_size,
                             skip_unreadable=cfg.skip_unreadable, workers=cfg.workers)


def _user_data_identity(cfg, semantic: dict[str, Any]) -> dict[str, Any]:
    """A user's data set is whatever ``data.root`` holds: its (absolute) path, and the CSV's, enter the config hash,
    so two folders with the same settings never share a cached run. (For benchmark data the path is only where the
    files are, and stays out of the hash.)"""
    if (semantic.get("data.dataset") in DATASET_REGISTRY.list()
            and DATASET_REGISTRY.info(semantic["data.dataset"]).get("user_data")):
        for key in ("root", "csv_path"):
            value = getattr(cfg.data, key)
            if value:
                semantic[f"data.{key}"] = str(Path(value).expanduser().resolve())
    return semantic


add_hash_hook("user-data-identity", _user_data_identity)


def _dataset_defaults(layers: dict[str, Any]) -> dict[str, Any]:
    """Default hook (:func:`dsink.config.add_default_hook`): the ``config_defaults`` a dataset was registered with
    (e.g. ``{"data": {"noise_mode": "none"}}`` for the real-noise benchmarks), beneath the user's values."""
    name = (layers.get("data") or {}).get("dataset") if isinstance(layers.get("data"), dict) else None
    if isinstance(name, str) and name in DATASET_REGISTRY:
        return copy.deepcopy(DATASET_REGISTRY.info(name).get("config_defaults") or {})
    return {}


add_default_hook("dataset-defaults", _dataset_defaults)
