"""Evaluate a trained run: test metrics of the last and the best (noisy-validation) checkpoint,
training-set diagnostics, and the predictions later methods reuse (``predictions.npz``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..fileio import atomic_write, atomic_write_text
from .metrics import classification_report, label_diagnostics

if TYPE_CHECKING:  # pragma: no cover
    from ..train.engine import Trainer


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def evaluate_trainer(trainer: "Trainer") -> dict[str, Any]:
    """Evaluate the trainer's current (last) weights and its ``best.pt``; write ``eval.json`` and ``predictions.npz``."""
    data, run_dir = trainer.data, trainer.run_dir
    counts = data.class_counts("true")
    probs = {s: _np(trainer.predict_probs(s)) for s in ("train", "val", "test")}
    report: dict[str, Any] = {
        "method": trainer.cfg.method.name,
        "epochs": trainer.epoch,
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "train_class_counts": counts.tolist(),
        "data_fingerprint": data.fingerprint,
        "last": classification_report(probs["test"], data.test_y, counts),
    }
    if data.train_true is not None:
        report["train"] = label_diagnostics(probs["train"].argmax(1), data.train_y, data.train_true)
    best_path = run_dir / "checkpoints" / "best.pt"
    extra = {}
    if best_path.exists():
        saved = {k: copy.deepcopy(m.state_dict()) for k, m in trainer.models.items()}
        epoch = trainer.load_weights(best_path)
        best_test = _np(trainer.predict_probs("test"))
        for k, m in trainer.models.items():
            m.load_state_dict(saved[k])
        report["best"] = {"epoch": epoch, **classification_report(best_test, data.test_y, counts)}
        extra["best_test_probs"] = best_test.astype(np.float32)
    arrays = {
        "train_probs": probs["train"], "val_probs": probs["val"], "test_probs": probs["test"],
        "train_noisy": data.train_y, "train_index": data.train_index, "val_noisy": data.val_y,
        "test_labels": data.test_y, **extra,
    }
    if data.train_true is not None:
        arrays["train_true"] = data.train_true
        arrays["val_true"] = data.val_true
    atomic_write(run_dir / "predictions.npz", lambda f: np.savez_compressed(f, **arrays))
    atomic_write_text(run_dir / "eval.json", json.dumps(report, indent=2))
    return report


def load_predictions(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Arrays of a run's ``predictions.npz``, validated (see :func:`dsink.train.rundir.read_predictions`)."""
    from ..train.rundir import read_predictions

    return read_predictions(run_dir)
