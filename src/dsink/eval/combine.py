"""The naive prediction-level combination: average f_L's and f_N's saved probabilities.

This is the simplest way to combine an imbalance-robust and a noise-robust model, and the baseline a
distillation method must beat. The result is a run directory like any other for ``dsink eval``,
``dsink distill`` and reports: ``run.json`` (kind ``average``), ``eval.json`` and ``predictions.npz``
(no config or checkpoints: nothing is trained).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..fileio import atomic_write, atomic_write_text
from ..train.rundir import AVERAGE_KIND, is_average_run
from .evaluate import load_predictions
from .metrics import classification_report, label_diagnostics

KIND = AVERAGE_KIND


def average_runs(imbalance_run: str | Path, noise_run: str | Path, out: str | Path, *, weight: float = 0.5,
                 force: bool = False, allow_unfinished: bool = False, wait: bool = False,
                 on_wait=None) -> dict[str, Any]:
    """Write the run directory ``out`` holding ``weight * p_L + (1 - weight) * p_N`` for every split.

    Both runs must be finished (or ``allow_unfinished``: a warning) and made on the same data (same
    fingerprint). ``out`` is locked while it is written (``wait``: for another writer; else an error).
    Returns the report (the same keys as a trained run's ``eval.json``; ``best`` averages the two best
    checkpoints).
    """
    import contextlib

    from ..train.rundir import holds_files, read_eval, require_finished, run_lock

    if not 0.0 <= weight <= 1.0:
        raise InputError(f"weight must be in [0, 1] (the share of the imbalance run), got {weight}")
    runs = {"imbalance": Path(imbalance_run), "noise": Path(noise_run)}
    out = Path(out)
    if out.resolve() in (runs["imbalance"].resolve(), runs["noise"].resolve()):
        raise InputError(f"--out {str(out)!r} is one of the runs being averaged; choose another folder")
    with contextlib.ExitStack() as stack:
        for role, run in runs.items():
            stack.enter_context(run_lock(run, shared=True))
            require_finished(run, f"{role} run", allow_unfinished=allow_unfinished, switch="--allow-unfinished")
        info = {k: read_eval(p) for k, p in runs.items()}
        if info["imbalance"]["data_fingerprint"] != info["noise"]["data_fingerprint"]:
            raise InputError("the imbalance and noise runs were made on different data (other subsample, noise, split "
                             "or seed); average runs trained with the same data config")
        preds = {k: load_predictions(p) for k, p in runs.items()}
        if holds_files(out) and not is_average_run(out) and not (out / "config.yaml").exists():
            raise InputError(f"{str(out)!r} exists and is not a dsink run directory; choose another --out")
        stack.enter_context(run_lock(out, wait=wait, on_wait=on_wait))
        return _write_average(runs, info, preds, out, weight, force)


def _write_average(runs, info, preds, out: Path, weight: float, force: bool) -> dict[str, Any]:
    from ..train.rundir import RUN_FILES, holds_files, write_status

    if holds_files(out):  # a dsink run (checked before the lock was taken)
        if not force:
            raise InputError(f"run {str(out)!r} exists; pass --force to overwrite it or choose another --out")
        for name in RUN_FILES:
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)

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
    report: dict[str, Any] = {
        "method": KIND, "epochs": 0, "num_classes": ref["num_classes"], "class_names": ref["class_names"],
        "train_class_counts": ref["train_class_counts"], "data_fingerprint": ref["data_fingerprint"],
        "weight": weight, "imbalance_run": str(runs["imbalance"]), "noise_run": str(runs["noise"]),
        "last": classification_report(arrays["test_probs"], arrays["test_labels"], counts),
    }
    if "best_test_probs" in pl and "best_test_probs" in pn:
        arrays["best_test_probs"] = mix("best_test_probs")
        report["best"] = {"epoch": 0, **classification_report(arrays["best_test_probs"], arrays["test_labels"], counts)}
    if "train_true" in arrays:
        report["train"] = label_diagnostics(arrays["train_probs"].argmax(1), arrays["train_noisy"], arrays["train_true"])
    write_status(out, kind=KIND, status="running", imbalance_run=str(runs["imbalance"]), noise_run=str(runs["noise"]),
                 weight=weight)
    atomic_write(out / "predictions.npz", lambda f: np.savez_compressed(f, **arrays))
    atomic_write_text(out / "eval.json", json.dumps(report, indent=2))
    write_status(out, status="finished")
    return report


def reevaluate_average(run_dir: str | Path) -> dict[str, Any]:
    """Recompute an average run from its two source runs (``dsink eval`` on such a run)."""
    from ..train.rundir import read_status

    st = read_status(Path(run_dir))
    if "imbalance_run" not in st or "noise_run" not in st:
        raise InputError(f"{str(Path(run_dir) / 'run.json')!r} lacks imbalance_run/noise_run; recreate the run with "
                         "dsink average")
    return average_runs(st["imbalance_run"], st["noise_run"], run_dir, weight=float(st.get("weight", 0.5)), force=True)
