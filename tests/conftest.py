"""Shared fixtures: an isolated label cache and small synthetic datasets in real on-disk formats."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

# Folder of the real CIFAR-N label files (CIFAR-10_human.pt, CIFAR-100_human.pt), or None: the tests of
# their published realised rates run only when the environment variable DSINK_CIFAR_N_DIR names it.
CIFAR_N_DIR = Path(os.environ["DSINK_CIFAR_N_DIR"]).expanduser() if os.environ.get("DSINK_CIFAR_N_DIR") else None


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes generated label files to its own cache folder."""
    monkeypatch.setenv("DSINK_CACHE", str(tmp_path_factory.mktemp("cache")))


def write_fake_cifar(root: Path, num_classes: int = 10, per_class: int = 30, test_per_class: int = 5, seed: int = 0):
    """Write a small random dataset in torchvision's CIFAR-10/100 pickle layout; returns the train labels."""
    rng = np.random.default_rng(seed)
    n, nt = num_classes * per_class, num_classes * test_per_class
    labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    test_labels = np.repeat(np.arange(num_classes), test_per_class)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    test = rng.integers(0, 256, size=(nt, 3072), dtype=np.uint8)
    if num_classes == 10:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for i, chunk in enumerate(np.array_split(np.arange(n), 5)):
            with open(folder / f"data_batch_{i + 1}", "wb") as f:
                pickle.dump({b"data": data[chunk], b"labels": labels[chunk].tolist()}, f)
        with open(folder / "test_batch", "wb") as f:
            pickle.dump({b"data": test, b"labels": test_labels.tolist()}, f)
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        with open(folder / "train", "wb") as f:
            pickle.dump({b"data": data, b"fine_labels": labels.tolist()}, f)
        with open(folder / "test", "wb") as f:
            pickle.dump({b"data": test, b"fine_labels": test_labels.tolist()}, f)
    return labels, data


def write_fake_cifar_n(path: Path, clean_labels, label_sets: dict[str, np.ndarray]) -> Path:
    """Write a label file in the real CIFAR-N format: a torch zip pickle of a dict of numpy int64 arrays."""
    import torch

    labels = {"clean_label": np.asarray(clean_labels, dtype=np.int64)}
    labels.update({k: np.asarray(v, dtype=np.int64) for k, v in label_sets.items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(labels, path)
    return path


@pytest.fixture
def fake_cifar10(tmp_path):
    labels, data = write_fake_cifar(tmp_path / "cifar")
    return tmp_path / "cifar", labels, data


@pytest.fixture
def fmnist_small():
    """Overrides for a small long-tailed noisy Fashion-MNIST (about 1,000 training samples)."""
    return ["data.n_max=300", "data.imbalance_ratio=10", "data.noise_rate=0.3",
            "optim.batch_size=64", "optim.epochs=2", "optim.lr=0.05"]
