"""The naive prediction-level combination: average f_L's and f_N's saved probabilities.

This is the simplest way to combine an imbalance-robust and a noise-robust model, and the baseline a
distillation method must beat. The result is a run directory like any other for ``dsink eval``,
``dsink distill`` and reports: ``run.json`` (kind ``average``), ``eval.json`` and ``predictions.npz``
(no config or checkpoints: nothing is trained).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..runs import AVERAGE_KIND, RunDir
from .metrics import classification_report, label_diagnostics


def average_runs(imbalance_run: str | Path, noise_run: str | Path, out: str | Path, *, weight: float = 0.5,
                 force: bool = False, allow_unfinished: bool = False, wait: bool = False,
                 on_wait=None) -> dict[str, Any]:
    """Write the run directory ``out`` holding ``weight * p_L + (1 - weight) * p_N`` for every split.

    Both runs must be finished (or ``allow_unfinished``: a warning) and made on the same data (same
    fingerprint). ``out`` is locked while it is written (``wait``: for another writer; else an error).
    Returns the report (the same keys as a trained run's evaluation report; ``best`` averages the two best
    checkpoints).
    """
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"weight must be in [0, 1] (the share of the imbalance run), got {weight}")
    runs = {"imbalance": RunDir(imbalance_run), "noise": RunDir(noise_run)}
    out = RunDir(out)
    if out.path.resolve() in (runs["imbalance"].path.resolve(), runs["noise"].path.resolve()):
        raise InputError(f"--out {str(out)!r} is one of the runs being averaged; choose another folder")
    with contextlib.ExitStack() as stack:
        for role, run in runs.items():
            stack.enter_context(run.lock(shared=True))
            run.require_finished(f"{role} run", allow_unfinished=allow_unfinished, switch="--allow-unfinished")
        info = {k: run.read_eval() for k, run in runs.items()}
        if info["imbalance"]["data_fingerprint"] != info["noise"]["data_fingerprint"]:
            raise InputError("the imbalance and noise runs were made on different data (other subsample, noise, split "
                             "or seed); average runs trained with the same data config")
        preds = {k: run.read_predictions() for k, run in runs.items()}
        if out.holds_files() and not out.is_run():
            raise InputError(f"{str(out)!r} exists and is not a dsink run directory; choose another --out")
        stack.enter_context(out.lock(wait=wait, on_wait=on_wait))
        return _write_average(runs, info, preds, out, weight, force)


def _write_average(runs: dict[str, RunDir], info, preds, out: RunDir, weight: float, force: bool) -> dict[str, Any]:
    if out.holds_files():  # a dsink run (checked before the lock was taken)
        if not force:
            raise InputError(f"run {str(out)!r} exists; pass --force to overwrite it or choose another --out")
        out.wipe()
    out.path.mkdir(parents=True, exist_ok=True)

    pl, pn = preds["imbalance"], preds["noise"]

    def mix(key):
        if pl[key].shape != pn[key].shape:
            raise InputError(f"the runs' {key} have different shapes {pl[key].shape} and {pn[key].shape}; "
                             "they were not made on the same data")
        return (weight * pl[key].astype(np.float64) + (1 - weight) * pn[key].astype(np.float64)).astype(np.float32)

    arrays = {k: v for k, v in pn.items() if not k.endswith("probs")}
    for key in ("train_probs", "val_probs", "test_probs"):
        arrays[key] = mix(key)
    ref = info["noise"]
    counts = np.asarray(ref["train_class_counts"])
    # the split the runs were evaluated on: the clean test split, or the noisy validation split without one
    split = ref.get("evaluated_on", "test")
    labels = arrays["test_labels"] if split == "test" else arrays["val_noisy"]
    report: dict[str, Any] = {
        "method": AVERAGE_KIND, "epochs": 0, "num_classes": ref["num_classes"], "class_names": ref["class_names"],
        "train_class_counts": ref["train_class_counts"], "data_fingerprint": ref["data_fingerprint"],
        "weight": weight, "imbalance_run": str(runs["imbalance"]), "noise_run": str(runs["noise"]),
        "evaluated_on": split, "last": classification_report(arrays[f"{split}_probs"], labels, counts),
    }
    if "note" in ref:
        report["note"] = ref["note"]
    for key in ("best_train_probs", "best_test_probs", "best_val_probs"):
        if key in pl and key in pn:
            arrays[key] = mix(key)
    if f"best_{split}_probs" in arrays:
        report["best"] = {"epoch": 0, **classification_report(arrays[f"best_{split}_probs"], labels, counts)}
    if "train_true" in arrays:
        report["train"] = label_diagnostics(arrays["train_probs"].argmax(1), arrays["train_noisy"], arrays["train_true"])
    out.start_average(runs["imbalance"], runs["noise"], weight)
    out.write_predictions(arrays)
    out.write_eval(report)
    out.write_status(status="finished")
    return report


def reevaluate_average(run_dir: str | Path) -> dict[str, Any]:
    """Recompute an average run from its two source runs (``dsink eval`` on such a run)."""
    imbalance_run, noise_run, weight = RunDir(run_dir).average_sources()
    return average_runs(imbalance_run, noise_run, run_dir, weight=weight, force=True)
