"""Label new data with a trained run's model: ``dsink predict RUN --data DIR|CSV|NPZ --out CSV``."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import build_data
from ..data.images import ImageFiles, UnreadableImage, image_files_under, read_csv_table, unreadable, warn_unreadable
from ..data.loader import StreamInputs, make_inputs
from ..errors import InputError, check_choice
from ..fileio import atomic_write_text, read_npz
from ..runs import RunDir
from .engine import Trainer
from .inputs import method_inputs

log = logging.getLogger(__name__)
SKIP_HINT = "pass --skip-unreadable to list and skip unreadable files"  # predict's way, not data.skip_unreadable


def _new_inputs(data_path: Path, trainer: Trainer, skip_unreadable: bool = False):
    """The raw inputs and names of the samples to label: image files (a folder, searched recursively, or a CSV
    with a ``path`` column) for image runs, an ``.npz`` with ``X`` for feature runs. ``skip_unreadable``: image
    files that cannot be decoded are dropped (and listed in a warning)."""
    kind = trainer.data.kind
    cfg = trainer.cfg
    if kind == "features":
        if data_path.suffix != ".npz" or not data_path.is_file():
            raise InputError(f"--data {str(data_path)!r}: this run was trained on features; give an .npz file with X")
        x = read_npz(data_path, "save it with np.savez(path, X=...)", ("X",), "npz file")["X"]
        d = trainer.data.input_shape[0]
        if x.ndim != 2 or x.shape[1] != d or x.dtype.kind not in "biuf" or not np.isfinite(x).all():
            raise InputError(f"--data {str(data_path)!r}: X must be finite numbers of shape (N, {d}), got "
                             f"{x.shape} {x.dtype}")
        return make_inputs(x.astype(np.float32), trainer.device, "memory"), [str(i) for i in range(len(x))]
    # decode to what the network was trained on: its channel count (1 for Fashion-MNIST) and image size
    channels, size = trainer.data.input_shape[0], cfg.data.image_size or trainer.data.input_shape[-1]
    if data_path.is_dir():
        paths = image_files_under(data_path)
    elif data_path.is_file() and data_path.suffix.lower() == ".csv":
        paths = list(read_csv_table(data_path.parent, data_path, need_label=False).paths)
    else:
        raise InputError(f"--data {str(data_path)!r} is neither a folder of images nor a CSV with a path column")
    if not paths:
        raise InputError(f"--data {str(data_path)!r} holds no image files")
    if skip_unreadable:
        errors = unreadable(paths, size, max(1, cfg.data.workers) * 2, channels)
        warn_unreadable([e for e in errors if e is not None], "--skip-unreadable")
        paths = [p for p, e in zip(paths, errors) if e is None]
        if not paths:
            raise InputError(f"--data {str(data_path)!r}: none of its image files can be read")
    return StreamInputs(ImageFiles(paths, size, channels), trainer.device, cfg.data.workers), paths


def predict_files(run_dir: str | Path, data_path: str | Path, out_csv: str | Path, *, checkpoint: str = "last",
                  device: str | None = None, progress: bool = False, skip_unreadable: bool = False) -> dict[str, Any]:
    """Write ``out_csv``: for each new sample its name (file path or row), predicted class, confidence and
    probability of each class, from the run's ``last`` or ``best`` checkpoint. Returns a summary.
    ``skip_unreadable``: leave out image files that cannot be decoded (listed in a warning) instead of refusing."""
    check_choice(checkpoint, ("last", "best"), "checkpoint")
    run = RunDir(run_dir)
    if run.is_average:
        raise InputError(f"{str(run_dir)!r} is an average of two runs and holds no model; predict with one of them")
    out_csv = Path(out_csv)
    if out_csv.is_dir():
        raise InputError(f"--out {str(out_csv)!r} is a folder; give the path of the CSV file to write")
    cfg = run.load_config()
    if device is not None:
        cfg.train.device = device
    with run.lock(shared=True):
        run.require_finished("run", allow_unfinished=True)
        if not run.has_checkpoint(checkpoint):
            raise InputError(f"run {str(run_dir)!r} has no {checkpoint} checkpoint; use --checkpoint last")
        data = build_data(cfg.data)
        inputs = method_inputs(cfg.method, data.fingerprint, run, allow_unfinished=True)
        trainer = Trainer(cfg, data, run, inputs=inputs)
        epoch = trainer.load_weights(checkpoint)
    new, names = _new_inputs(Path(data_path), trainer, skip_unreadable)
    trainer.inputs["new"] = new
    try:
        probs = trainer.predict_logits("new", progress="predict" if progress else None).softmax(1).cpu().numpy()
    except UnreadableImage as e:  # the training hint (data.skip_unreadable) is not a predict option
        raise e.hinting(SKIP_HINT) from None
    pred = probs.argmax(1)
    classes = data.class_names
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path" if data.kind == "image" else "row", "predicted_label", "predicted_name", "confidence"]
               + [f"p_{c}" for c in classes])
    for name, k, row in zip(names, pred, probs):
        w.writerow([name, int(k), classes[k], f"{row[k]:.6f}"] + [f"{v:.6f}" for v in row])
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_csv, buf.getvalue())
    counts = np.bincount(pred, minlength=len(classes))
    return {"run": str(run.path), "checkpoint": checkpoint, "epoch": epoch, "samples": len(names), "csv": str(out_csv),
            "predicted_counts": {c: int(n) for c, n in zip(classes, counts)}}
