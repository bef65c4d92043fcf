"""What a report shows, read from a ``dsink run`` folder (``results.json``) or one run directory.

Everything is read through :class:`~dsink.runs.RunDir` and computed with :mod:`dsink.eval`; nothing is
trained and nothing is written here.

The row to deploy is the one ``dsink run`` chose without test labels (``results.json``'s ``deploy``:
:func:`dsink.eval.health.deploy_row`, the target unless the health check flags an auxiliary). Each row also shows
its *selection score*, the class-balanced accuracy on the noisy validation split
(``dsink.train.engine.SELECTION_RULE``) of its selected checkpoint (``checkpoints/best.pt``) - the best
``val_bal_acc`` of its ``metrics.jsonl``; an average run, which has no epochs, is scored on its stored validation
probabilities the same way; a row's score is the mean over its seeds. Results written before ``deploy`` existed
fall back to the row with the highest selection score.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..eval.metrics import per_class_accuracy
from ..runs import RunDir

log = logging.getLogger(__name__)

SELECTION_KEY = "val_bal_acc"  # dsink.train.engine.SELECTION_RULE (not imported: report stands above train/)
CURVE_KEYS = ("train_correction", SELECTION_KEY)


def read_results(path: str | Path) -> dict[str, Any]:
    """The results of a ``dsink run`` folder, or results of the same shape for one run directory."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{str(path)!r} is not a folder; pass a dsink run folder (results.json) or a run directory")
    if (path / "results.json").is_file():
        try:
            res = json.loads((path / "results.json").read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {str(path / 'results.json')!r} ({e}); run `dsink run` again") from None
        if not isinstance(res, dict) or not isinstance(res.get("rows"), list) or not res["rows"]:
            raise InputError(f"{str(path / 'results.json')!r} holds no result rows; run `dsink run` again")
        for row in res["rows"]:
            row["runs"] = [str(locate_run(d, path)) for d in row.get("runs", [])]
        return res
    run = RunDir(path)
    if not run.has_eval():
        raise InputError(f"{str(path)!r} holds neither results.json nor {RunDir.EVAL}; pass a dsink run folder or a "
                         "finished run directory")
    from ..pipeline import METRICS, metric_stats

    info = run.read_eval()
    role = "target" if info.get("method") == "dsink" else "run"
    row = {"method": info.get("method", path.name), "role": role, "seeds": [0], "runs": [str(path)],
           **metric_stats([info])}
    res = {"rows": [row], "metrics": list(METRICS) + ["correction_rate", "top1_best_val"],
           "evaluated_on": [info.get("evaluated_on", "test")]}
    if info.get("note"):
        res["notes"] = [info["note"]]
    return res


def locate_run(run: str, pipeline: Path) -> Path:
    """A run directory named in ``results.json``: as written (absolute, or relative to the working folder), else
    relative to the pipeline folder or one of its parents (``dsink run`` names runs relative to where it ran)."""
    p = Path(run)
    if p.is_absolute() or p.is_dir():
        return p
    for base in (pipeline, *pipeline.resolve().parents):
        if (base / p).is_dir():
            return base / p
    raise InputError(f"run {run!r} of {str(pipeline / 'results.json')!r} is not found; run dsink report from the "
                     "folder dsink run ran in")


def selection_score(run: RunDir) -> tuple[float | None, int | None]:
    """The run's noisy-validation balanced accuracy at its selected checkpoint, and that checkpoint's epoch
    (None, None when the run has no validation split)."""
    rows = [r for r in run.read_metrics() if isinstance(r.get(SELECTION_KEY), (int, float))]
    if rows:
        best = max(rows, key=lambda r: r[SELECTION_KEY])  # the first of equal scores, as the engine keeps it
        return float(best[SELECTION_KEY]), int(best.get("epoch", 0))
    try:
        preds = run.read_predictions()
    except InputError:
        return None, None
    probs = preds.get("best_val_probs", preds.get("val_probs"))
    labels = preds.get("val_noisy")
    if probs is None or labels is None or not len(labels):
        return None, None
    acc = per_class_accuracy(probs.argmax(1), labels, probs.shape[1])
    return float(np.nanmean(acc)), None


def _mean(values: list[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def mark_deploy(rows: list[dict[str, Any]], chosen: str | None = None) -> int | None:
    """Adds ``selection`` (mean selection score) and ``selected_epochs`` to each row; returns the index of the row
    to deploy: the row named ``chosen`` (results.json's ``deploy``), else the highest selection score (None when no
    row has one)."""
    best = None
    for i, row in enumerate(rows):
        scores = [selection_score(RunDir(d)) for d in row.get("runs", [])]
        row["selection"] = _mean([s for s, _ in scores])
        row["selected_epochs"] = [e for _, e in scores]
        if row["selection"] is not None and (best is None or row["selection"] > rows[best]["selection"]):
            best = i
    named = [i for i, row in enumerate(rows) if row["method"] == chosen]
    return named[0] if named else best


def per_class(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Class names, training sizes (true labels) and each row's mean per-class accuracy (last epoch)."""
    out: dict[str, Any] = {"acc": {}}
    for row in rows:
        evals = [RunDir(d).read_eval() for d in row.get("runs", []) if RunDir(d).has_eval()]
        if not evals:
            continue
        out.setdefault("counts", evals[0].get("train_class_counts"))
        out.setdefault("names", evals[0].get("class_names"))
        acc = [[np.nan if a is None else a for a in e["last"].get("per_class_acc", [])] for e in evals]
        if acc and all(len(a) == len(acc[0]) for a in acc):
            with warnings.catch_warnings():  # a class no sample of the split holds: None
                warnings.simplefilter("ignore", RuntimeWarning)
                out["acc"][row["method"]] = [None if np.isnan(a) else float(a) for a in np.nanmean(acc, axis=0)]
    if not out["acc"] or out.get("counts") is None:
        return None
    out["names"] = out.get("names") or [str(c) for c in range(len(out["counts"]))]
    return out


def curves(rows: list[dict[str, Any]], key: str) -> dict[str, list[float]]:
    """Per-epoch mean over seeds of a ``metrics.jsonl`` field, one curve per row that logged it."""
    out = {}
    for row in rows:
        runs = [[r.get(key) for r in RunDir(d).read_metrics()] for d in row.get("runs", [])]
        runs = [c for c in runs if c and all(isinstance(v, (int, float)) for v in c)]
        if runs:
            n = min(len(c) for c in runs)
            out[row["method"]] = np.mean([c[:n] for c in runs], axis=0).tolist()
    return out


def confusion(run: RunDir) -> dict[str, Any] | None:
    """Confusion matrix (rows: label, columns: prediction) of a run's last-epoch predictions on the split it was
    evaluated on (the clean test split, else the noisy validation split)."""
    try:
        info, preds = run.read_eval(), run.read_predictions()
    except InputError as e:
        log.warning("no confusion matrix for %s: %s", run, e)
        return None
    split = info.get("evaluated_on", "test")
    probs, labels = (preds["test_probs"], preds.get("test_labels")) if split == "test" else \
        (preds.get("val_probs"), preds.get("val_noisy"))
    if probs is None or labels is None or not len(labels):
        return None
    k = probs.shape[1]
    m = np.bincount(labels * k + probs.argmax(1), minlength=k * k).reshape(k, k)
    return {"matrix": m.tolist(), "split": split, "names": info.get("class_names") or [str(c) for c in range(k)],
            "run": str(run)}


def health_items(obj: Any, prefix: str = "") -> list[str]:
    """A ``health`` entry as lines of text: ``dsink run``'s check (``{"ok", "warnings": [{"message", "seeds"}]}``,
    :func:`dsink.eval.health.auxiliary_health`), or any nesting of lists, mappings and strings."""
    if obj is None or obj == [] or obj == {}:
        return []
    if isinstance(obj, dict) and isinstance(obj.get("warnings"), list) and "ok" in obj:
        return [prefix + str(w.get("message", w)) + (f" (seeds {', '.join(map(str, w['seeds']))})"
                                                      if isinstance(w, dict) and w.get("seeds") else "")
                for w in obj["warnings"]]
    if isinstance(obj, str):
        return [prefix + obj]
    if isinstance(obj, dict):
        if "message" in obj or "warning" in obj:
            return [prefix + str(obj.get("message", obj.get("warning")))]
        out = []
        for k, v in obj.items():
            out += health_items(v, f"{prefix}{k}: ") if isinstance(v, (dict, list)) else [f"{prefix}{k}: {v}"]
        return out
    if isinstance(obj, (list, tuple)):
        return [line for v in obj for line in health_items(v, prefix)]
    return [prefix + str(obj)]


def training_labels(run: RunDir) -> dict[str, Any] | None:
    """The target's training-label diagnostics (benchmark data: true labels known) from its evaluation report."""
    try:
        info = run.read_eval()
    except InputError:
        return None
    return info.get("train")
