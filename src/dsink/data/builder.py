"""From a :class:`~dsink.config.DataConfig` to the arrays a run trains on.

Steps: load the source; subsample it long-tailed **by true label**; inject noise; hold
out a noisy validation split (stratified by the noisy label). The generated indices and
labels are cached on disk, keyed by every parameter, the seed and a hash of the source labels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import InputError
from ..fileio import atomic_write
from ..resolve import check_data_values
from .datasets import DATASET_REGISTRY, load_dataset
from .images import ImageFiles, folder_summary
from .longtail import longtail_counts, longtail_indices
from .noise import canonical_noise_mode, check_labels, inject_noise, noise_report
from .realnoise import check_settings as check_real_noise_settings
from .sources import CIFAR_N_LABEL_SETS, Source, default_cache_dir, few, find_cifar_n, load_cifar_n

log = logging.getLogger(__name__)


@dataclass
class LabelSet:
    """Which source samples a benchmark uses and with which labels."""

    indices: np.ndarray  # (N,) into the source training set, sorted
    noisy: np.ndarray  # (N,) labels the learner sees
    true: np.ndarray | None  # (N,) true labels where known
    is_val: np.ndarray  # (N,) bool: held out for model selection
    counts: list[int]  # per-class sizes asked of the long-tail profile


@dataclass
class DataBundle:
    """Training (noisy), validation (noisy) and test (clean) arrays of one benchmark."""

    name: str
    kind: str
    num_classes: int
    class_names: list[str]
    train_x: np.ndarray
    train_y: np.ndarray
    train_true: np.ndarray | None
    train_index: np.ndarray  # position of each training sample in the source training set
    val_x: np.ndarray
    val_y: np.ndarray
    val_true: np.ndarray | None
    test_x: np.ndarray
    test_y: np.ndarray
    mean: list[float] = field(default_factory=list)  # per-channel/feature normalisation
    std: list[float] = field(default_factory=list)
    fingerprint: str = ""  # hash of indices and labels; auxiliary runs must share it

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(self.train_x.shape[1:])

    def class_counts(self, which: str = "true") -> np.ndarray:
        """Training-set class histogram by true (falls back to noisy) or noisy labels."""
        y = self.train_true if which == "true" and self.train_true is not None else self.train_y
        return np.bincount(y, minlength=self.num_classes)


def _validate(cfg: DataConfig) -> str:
    mode = canonical_noise_mode(cfg.noise_mode)
    check_data_values(cfg)  # the resolver's checks, for data built from a bare DataConfig
    if cfg.dataset in DATASET_REGISTRY and DATASET_REGISTRY.info(cfg.dataset).get("real_noise"):
        check_real_noise_settings(cfg, mode)  # no synthetic noise on real noise (Clothing1M, WebVision, Food-101N)
    if mode == "human" and cfg.dataset not in CIFAR_N_LABEL_SETS:
        raise InputError(f"noise_mode human needs dataset cifar10 or cifar100 (CIFAR-N), got {cfg.dataset!r}")
    if mode == "human" and cfg.human_label not in CIFAR_N_LABEL_SETS[cfg.dataset]:
        raise InputError(
            f"data.human_label {cfg.human_label!r} is not a {cfg.dataset}N label set; "
            f"valid: {', '.join(CIFAR_N_LABEL_SETS[cfg.dataset])}"
        )
    return mode


def human_labels_for(cfg: DataConfig, true_labels: np.ndarray) -> np.ndarray:
    """The CIFAR-N annotator labels of the whole CIFAR training set, checked against its true labels."""
    labels = load_cifar_n(find_cifar_n(cfg.dataset, cfg.cifar_n_path, cfg.download))
    clean = labels["clean_label"]
    if len(clean) != len(true_labels) or not np.array_equal(clean, true_labels):
        raise InputError(
            "the CIFAR-N file's clean labels do not match this CIFAR training set; "
            "use the official CIFAR files with the matching CIFAR-N file"
        )
    if cfg.human_label not in labels:
        raise InputError(f"CIFAR-N file has no {cfg.human_label!r}; it has {', '.join(sorted(labels))}")
    return labels[cfg.human_label]


def make_labels(
    true_labels: np.ndarray,
    num_classes: int,
    cfg: DataConfig,
    *,
    human_labels: np.ndarray | None = None,
    class_map=None,
    fixed_val: np.ndarray | None = None,
) -> LabelSet:
    """Subsample long-tailed by true label, inject noise and choose the validation split (no caching).

    ``fixed_val`` (bool per source sample): the data's own validation split, kept instead of holding one out."""
    mode = _validate(cfg)
    y = check_labels(true_labels, num_classes, "source labels")
    have = np.bincount(y, minlength=num_classes)
    n_max = cfg.n_max if cfg.n_max is not None else int(have.max())
    counts = longtail_counts(int(n_max), num_classes, float(cfg.imbalance_ratio), cfg.profile)
    if cfg.imbalance_ratio == 1 and cfg.n_max is None:
        idx = np.arange(len(y))  # balanced and full size: keep the whole source
        counts = have.tolist()
    else:
        idx = longtail_indices(y, counts, cfg.data_seed)
    true = y[idx]
    human = human_labels[idx] if human_labels is not None else None
    noisy = inject_noise(true, mode, cfg.noise_rate, num_classes, [cfg.data_seed, 1], class_map=class_map, human_labels=human)
    is_val = np.zeros(len(idx), dtype=bool)
    if fixed_val is not None:
        is_val = np.asarray(fixed_val, dtype=bool)[idx]
    elif cfg.val_fraction > 0:
        rng = np.random.default_rng([cfg.data_seed, 2])
        for c in range(num_classes):
            pool = np.flatnonzero(noisy == c)
            k = int(np.floor(cfg.val_fraction * len(pool)))
            is_val[rng.permutation(pool)[:k]] = True
    return LabelSet(idx, noisy, true, is_val, counts)


def _cache_key(cfg: DataConfig, true_labels: np.ndarray, extra: bytes) -> str:
    params = {k: getattr(cfg, k) for k in (
        "dataset", "imbalance_ratio", "profile", "n_max", "noise_rate", "data_seed", "val_fraction")}
    params["noise_mode"] = canonical_noise_mode(cfg.noise_mode)
    if params["noise_mode"] == "human":
        params["human_label"] = cfg.human_label
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    h.update(np.ascontiguousarray(true_labels, dtype=np.int64).tobytes())
    h.update(extra)
    return h.hexdigest()[:20]


def cached_labels(cfg: DataConfig, source: Source) -> LabelSet:
    """:func:`make_labels` with an on-disk cache (``<cache_dir>/labels/<dataset>-<key>.npz``)."""
    mode = _validate(cfg)
    base = source.train_labels
    human = human_labels_for(cfg, base) if mode == "human" else None
    class_map = source.semantic_map if mode == "semantic" else None
    extra = b"" if human is None else human.tobytes()
    if source.val_mask is not None:
        extra += b"val" + np.packbits(source.val_mask).tobytes()
    cache_root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    path = cache_root / "labels" / f"{cfg.dataset}-{_cache_key(cfg, base, extra)}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                ls = LabelSet(z["indices"], z["noisy"], None, z["is_val"], z["counts"].tolist())
        except (OSError, ValueError, KeyError) as e:
            log.warning("label cache %s is unreadable (%s); regenerating it", path, e)
            ls = None
    else:
        ls = None
    if ls is None:
        ls = make_labels(base, source.num_classes, cfg, human_labels=human, class_map=class_map,
                         fixed_val=source.val_mask)
        arrays = {"indices": ls.indices, "noisy": ls.noisy, "is_val": ls.is_val, "counts": np.asarray(ls.counts)}
        # atomic, and a full or read-only cache names the file (the CLI's exit 2), not a bare OSError
        atomic_write(path, lambda f: np.savez(f, **arrays))
    # True labels: known for benchmarks (and user data with a y_true column); when noise is
    # injected into a user's labels, those labels play the part of the truth.
    if source.train_true is not None:
        ls.true = source.train_true[ls.indices]
    else:
        ls.true = base[ls.indices] if mode != "none" else None
    return ls


def _norm_stats(x, kind: str) -> tuple[list[float], list[float]]:
    if isinstance(x, ImageFiles):  # image files: the statistics of (at most) 256 evenly spaced images
        x = np.stack([x[int(i)] for i in np.unique(np.linspace(0, len(x) - 1, min(256, len(x))).astype(int))])
    if kind == "image":
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        mean = [float(flat[:, c].mean()) / 255.0 for c in range(x.shape[1])]
        std = [float(flat[:, c].std()) / 255.0 or 1.0 for c in range(x.shape[1])]
    else:
        mean, std = x.mean(0).tolist(), [s if s > 0 else 1.0 for s in x.std(0).tolist()]
    return mean, std


def build_data(cfg: DataConfig) -> DataBundle:
    """Load, subsample, corrupt and split the data described by ``cfg``."""
    _validate(cfg)
    src = load_dataset(cfg)
    ls = cached_labels(cfg, src)
    tr, va = ~ls.is_val, ls.is_val
    idx = ls.indices
    unseen = np.flatnonzero(np.bincount(ls.noisy[tr], minlength=src.num_classes) == 0)
    if unseen.size:
        warnings.warn(
            f"after long-tail subsampling, label noise and the validation split, no training sample is labelled "
            f"class {few(int(c) for c in unseen)}; the model cannot learn to predict it; lower data.noise_rate or "
            "data.imbalance_ratio, or raise data.n_max",
            UserWarning,
            stacklevel=2,
        )
    if not src.has_test and not va.any():
        why = (f" (data.val_fraction={cfg.val_fraction:g} of each class holds out nothing: every class has fewer than "
               f"{int(np.ceil(1 / cfg.val_fraction))} labelled samples)" if cfg.val_fraction > 0 else "")
        raise InputError(f"the data has no clean test split and no validation split{why}, so nothing can evaluate a "
                         "model; raise data.val_fraction (e.g. 0.1), add DIR/val/ or DIR/test/, or CSV rows with "
                         "split=val or split=test")
    mean, std = _norm_stats(src.train_x, src.kind)
    h = hashlib.sha256(idx.tobytes() + ls.noisy.tobytes() + ls.is_val.tobytes()).hexdigest()[:16]
    true = ls.true
    return DataBundle(
        name=src.name, kind=src.kind, num_classes=src.num_classes, class_names=src.class_names,
        train_x=src.train_x[idx[tr]], train_y=ls.noisy[tr], train_true=None if true is None else true[tr],
        train_index=idx[tr], val_x=src.train_x[idx[va]], val_y=ls.noisy[va],
        val_true=None if true is None else true[va], test_x=src.test_x, test_y=src.test_labels,
        mean=mean, std=std, fingerprint=h,
    )


def describe(cfg: DataConfig) -> dict:
    """Class counts, realised noise rate, transition matrix and split sizes of a benchmark (JSON-ready)."""
    _validate(cfg)
    src = load_dataset(cfg)
    ls = cached_labels(cfg, src)
    out = {
        "dataset": cfg.dataset,
        "num_classes": src.num_classes,
        "class_names": src.class_names,
        "noise_mode": canonical_noise_mode(cfg.noise_mode),
        "noise_rate_requested": cfg.noise_rate,
        "imbalance_ratio": cfg.imbalance_ratio,
        "profile": cfg.profile,
        "data_seed": cfg.data_seed,
        "profile_counts": list(ls.counts),
        "num_samples": int(len(ls.indices)),
        "num_train": int((~ls.is_val).sum()),
        "num_val": int(ls.is_val.sum()),
        "num_test": int(len(src.test_labels)),
    }
    if ls.true is not None:
        out.update(noise_report(ls.true, ls.noisy, src.num_classes).to_dict())
    else:
        out["noisy_counts"] = np.bincount(ls.noisy, minlength=src.num_classes).tolist()
    given = np.bincount(ls.noisy, minlength=src.num_classes)
    out["given_counts"] = given.tolist()  # the class histogram of the labels the learner sees (train + val)
    out["given_imbalance_ratio"] = float(given.max() / given[given > 0].min()) if given.any() else None
    out["validation"] = "the data's own split" if src.val_mask is not None else f"held out ({cfg.val_fraction:g})"
    if not src.has_test:
        out["test"] = ("none: the data has no clean test split; runs are evaluated on the noisy validation split "
                       "and say so")
    if src.info:
        out["source_info"] = src.info
    if isinstance(src.train_x, ImageFiles):
        paths = np.concatenate([src.train_x.paths, src.test_x.paths])
        out["images"] = {"num_files": int(len(paths)), "image_size": cfg.image_size or "own size",
                         **folder_summary(paths)}
    return out
