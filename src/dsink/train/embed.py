"""Features of a frozen network for the fast route: ``dsink embed ... --out FEATURES.npz``.

The network is any registered model (typically a pretrained torchvision backbone, ``model.pretrained``),
run once without augmentation over the training, validation and test splits of the data (image folders
streamed like training data). The ``.npz`` has the layout ``data.dataset=npz`` trains on: ``X``, ``y``
(given labels; the validation rows included, marked by ``is_val``), ``X_test``, ``y_test``, ``y_true`` when
the true labels are known, ``class_names`` and, for image files, ``paths`` / ``paths_test``.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import RunConfig
from ..data import build_data
from ..errors import InputError
from ..fileio import atomic_write
from .engine import SPLITS, Trainer, progress_bars, progress_log

log = logging.getLogger(__name__)


def embed(cfg: RunConfig, out: str | Path, *, progress: bool = False) -> dict[str, Any]:
    """Write the features of ``cfg.model`` (frozen, its ``features`` output) for ``cfg.data`` to ``out`` (``.npz``);
    returns a summary (shapes, time, backend)."""
    out = Path(out)
    if out.suffix != ".npz":
        raise InputError(f"--out {str(out)!r} must name an .npz file (the features file data.dataset=npz reads)")
    if out.is_dir():
        raise InputError(f"--out {str(out)!r} is a folder; give the path of the .npz file to write")
    cfg = dataclasses.replace(cfg, method=dataclasses.replace(cfg.method, name="ce", params={}))
    t0 = time.perf_counter()
    data = build_data(cfg.data)
    with tempfile.TemporaryDirectory() as tmp:  # the Trainer writes nothing; its run directory is never created
        trainer = Trainer(cfg, data, Path(tmp) / "embed")
    net = trainer.models["net"].eval()
    feats = {}
    with torch.inference_mode(), trainer.autocast():
        for split in SPLITS:
            parts = []
            n_batches = -(-len(trainer.inputs[split]) // trainer.eval_batch_size)
            for _, raw in _bar(trainer.batches(split), n_batches, f"embed {split}", progress):
                parts.append(net.features(trainer.pipeline(raw)).float().flatten(1).cpu())
            feats[split] = torch.cat(parts).numpy() if parts else np.zeros((0, 0), np.float32)
    dim = next(f.shape[1] for f in feats.values() if f.size)
    feats = {k: v if v.size else np.zeros((0, dim), np.float32) for k, v in feats.items()}
    arrays: dict[str, np.ndarray] = {
        "X": np.concatenate([feats["train"], feats["val"]]).astype(np.float32),
        "y": np.concatenate([data.train_y, data.val_y]).astype(np.int64),
        "is_val": np.concatenate([np.zeros(len(data.train_y), bool), np.ones(len(data.val_y), bool)]),
        "X_test": feats["test"].astype(np.float32), "y_test": np.asarray(data.test_y, np.int64),
        "class_names": np.asarray(data.class_names, dtype=str),
    }
    if data.train_true is not None and data.val_true is not None:
        arrays["y_true"] = np.concatenate([data.train_true, data.val_true]).astype(np.int64)
    paths = [getattr(x, "paths", None) for x in (data.train_x, data.val_x, data.test_x)]
    if all(p is not None for p in paths):
        arrays["paths"] = np.concatenate(paths[:2]).astype(str)
        arrays["paths_test"] = np.asarray(paths[2], dtype=str)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: np.savez(f, **arrays))
    seconds = time.perf_counter() - t0
    log.info("wrote %s: %d x %d features in %.1f s", out, len(arrays["X"]), dim, seconds)
    return {"out": str(out), "num_train": int(len(data.train_y)), "num_val": int(len(data.val_y)),
            "num_test": int(len(data.test_y)), "dim": int(dim), "seconds": seconds, "backend": trainer.backend,
            "model": cfg.model.name, "pretrained": cfg.model.pretrained}


def _bar(it, total: int, desc: str, on: bool):
    if not on:
        return it
    if not progress_bars():  # a log file or a pipe: one line per split, no redrawn bar
        progress_log.info("%s: %d batches", desc, total)
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)
