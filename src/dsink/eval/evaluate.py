"""Evaluate a trained run: test metrics of the last and the best (noisy-validation) checkpoint,
training-set diagnostics, and the predictions later methods reuse (``predictions.npz``)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from ..runs import RunDir
from .metrics import classification_report, label_diagnostics


def synthetic_on_own_data(cfg) -> str | None:
    """A note when synthetic noise or a long-tailed subsample was applied to a user's own data (``npz``,
    ``image_folder``), whose labels and class sizes are otherwise used as given; None otherwise."""
    from ..data.datasets import DATASET_REGISTRY

    if cfg.dataset not in DATASET_REGISTRY or not DATASET_REGISTRY.info(cfg.dataset).get("user_data"):
        return None
    done = []
    if cfg.noise_mode != "none":
        done.append(f"synthetic label noise ({cfg.noise_mode}, rate {cfg.noise_rate:g}) was injected on top of the given labels")
    if cfg.imbalance_ratio != 1 or cfg.n_max is not None:
        done.append(f"the training set was subsampled to a long tail (imbalance_ratio {cfg.imbalance_ratio:g})")
    return ("on your data, as asked: " + " and ".join(done)) if done else None


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy()


NO_TEST_NOTE = ("the data has no clean test split: these figures are on the noisy validation split (given labels, "
                "which hold label noise) and the selected checkpoint was chosen on the same split; add a clean test set "
                "(DIR/test/, CSV rows with split=test, or X_test in an .npz) for unbiased figures")


def evaluate_trainer(trainer: Any) -> dict[str, Any]:
    """Evaluate a :class:`dsink.train.Trainer`'s current (last) weights and its run's best checkpoint; write the
    run's evaluation report and predictions."""
    data, run = trainer.data, trainer.run
    counts = data.class_counts("true")
    probs = {s: _np(trainer.predict_probs(s)) for s in ("train", "val", "test")}
    # without a clean test split (a user's image folder), the figures are those of the noisy validation split
    split, labels = ("test", data.test_y) if len(data.test_y) else ("val", data.val_y)
    report: dict[str, Any] = {
        "method": trainer.cfg.method.name,
        "epochs": trainer.epoch,
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "train_class_counts": counts.tolist(),
        "data_fingerprint": data.fingerprint,
        "evaluated_on": split,
        "last": classification_report(probs[split], labels, counts),
    }
    notes = [NO_TEST_NOTE] if split != "test" else []
    synthetic = synthetic_on_own_data(trainer.cfg.data)
    if synthetic:
        notes.append(synthetic)
    if notes:
        report["note"] = "; ".join(notes)
    if data.train_true is not None:
        report["train"] = label_diagnostics(trainer.training_label_predictions(np.log(np.maximum(probs["train"], 1e-30))), data.train_y,
                                            data.train_true)
    extra = {}
    if run.has_checkpoint("best"):
        saved = {k: copy.deepcopy(m.state_dict()) for k, m in trainer.models.items()}
        epoch = trainer.load_weights("best")
        # the selected checkpoint saved at the last epoch holds the same weights: its probabilities are those above
        best = probs if epoch == trainer.epoch else {s: _np(trainer.predict_probs(s)) for s in ("train", "val", "test")}
        for k, m in trainer.models.items():
            m.load_state_dict(saved[k])
        report["best"] = {"epoch": epoch, **classification_report(best[split], labels, counts)}
        # the selected checkpoint's probabilities: a distillation may read its auxiliaries there (aux_checkpoint)
        extra.update({f"best_{s}_probs": best[s].astype(np.float32) for s in ("train", "val", "test")})
    arrays = {
        "train_probs": probs["train"], "val_probs": probs["val"], "test_probs": probs["test"],
        "train_noisy": data.train_y, "train_index": data.train_index, "val_noisy": data.val_y,
        "test_labels": data.test_y, **extra,
    }
    if data.train_true is not None:
        arrays["train_true"] = data.train_true
        arrays["val_true"] = data.val_true
    run.write_predictions(arrays)
    paths = getattr(data.train_x, "paths", None)  # image files: the audit names them
    if paths is not None:
        run.write_sample_paths(paths)
    run.write_eval(report)
    return report


def load_predictions(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Arrays of a run's saved predictions, validated (see :meth:`dsink.runs.RunDir.read_predictions`)."""
    return RunDir(run_dir).read_predictions()
