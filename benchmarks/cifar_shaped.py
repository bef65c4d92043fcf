"""Write a CIFAR-10-shaped dataset made from Fashion-MNIST, in torchvision's CIFAR-10 pickle layout.

Each 28x28 grey image is padded to 32x32 (2 px of black each side) and repeated over three channels, so
``dsink run configs/cifar10_*.yaml --set data.root=ROOT --set data.download=false`` runs the CIFAR recipe
(ResNet-32, 3x32x32 input, 10 classes) on learnable data where CIFAR itself cannot be downloaded. The
accuracy is Fashion-MNIST's, not CIFAR's: use it for speed and for a run that must train, not for numbers
to compare with the papers.

Usage: python benchmarks/cifar_shaped.py ROOT [--per-class 5000]
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

from dsink.data import load_fashion_mnist


def to_cifar(x: np.ndarray) -> np.ndarray:
    """(N, 1, 28, 28) uint8 -> (N, 3072) uint8 rows in CIFAR's channel-major order."""
    x = np.pad(x.reshape(-1, 28, 28), ((0, 0), (2, 2), (2, 2)))
    return np.repeat(x[:, None], 3, axis=1).reshape(len(x), 3072)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="folder to hold cifar-10-batches-py/")
    ap.add_argument("--per-class", type=int, default=5000, help="training images per class (CIFAR-10: 5000)")
    args = ap.parse_args()
    fm = load_fashion_mnist()
    rng = np.random.default_rng(0)
    y = np.asarray(fm.train_labels)
    keep = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: args.per_class] for c in range(10)])
    keep = rng.permutation(keep)
    data, labels = to_cifar(np.asarray(fm.train_x)[keep]), y[keep]
    folder = Path(args.root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i, chunk in enumerate(np.array_split(np.arange(len(keep)), 5)):
        with open(folder / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump({b"data": data[chunk], b"labels": labels[chunk].tolist()}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": to_cifar(np.asarray(fm.test_x)), b"labels": np.asarray(fm.test_labels).tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in fm.class_names]}, f)
    print(f"wrote {len(keep)} training and {len(fm.test_labels)} test images to {folder}")


if __name__ == "__main__":
    main()
