"""Label audit: the training samples whose given label the surrogate labels reject.

For a D-SINK run the surrogate labels are recomputed from the run's auxiliaries and its final target
predictions, ``Q = surrogate_labels(p_N, p_L, f)`` with the run's own solver settings: the transport
plan that balances the sample-level evidence of f_N and the target against f_L's class totals. For any
other run the audit uses the run's own training-set probabilities. A sample is *flagged* when the
argmax of its row differs from its given label; flags are ranked by the margin
``q[suggested] - q[given]`` (rows normalised to sum to 1).

On benchmark data (true labels known) the flagged set is scored against the injected noise: precision
(share of flags that are truly mislabelled), recall (share of mislabelled samples flagged), overall and
for the tail (the few-shot classes of :func:`dsink.eval.metrics.shot_groups`, by true label).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..fileio import atomic_write_text
from ..runs import RunDir
from .metrics import shot_groups


def audit_scores(probs: np.ndarray, given: np.ndarray) -> dict[str, np.ndarray]:
    """Suggested label, its confidence, the given label's probability and the ranking margin per sample."""
    q = np.asarray(probs, dtype=np.float64)
    q = q / np.clip(q.sum(1, keepdims=True), 1e-30, None)
    sug = q.argmax(1)
    rows = np.arange(len(q))
    return {"suggested": sug, "confidence": q[rows, sug], "given_prob": q[rows, given],
            "margin": q[rows, sug] - q[rows, given], "flagged": sug != given}


def flag_quality(flagged: np.ndarray, given: np.ndarray, true: np.ndarray, train_counts: np.ndarray) -> dict[str, Any]:
    """Precision/recall of a flagged set against the true noise, overall and for the tail classes."""
    noisy = given != true
    tail = np.isin(true, shot_groups(train_counts)["few"])

    def pr(mask):
        f, n = flagged & mask, noisy & mask
        return {"flagged": int(f.sum()), "noisy": int(n.sum()),
                "precision": float((f & noisy).sum() / f.sum()) if f.sum() else None,
                "recall": float((f & noisy).sum() / n.sum()) if n.sum() else None}

    return {"overall": pr(np.ones_like(noisy)), "tail": pr(tail)}


def surrogate_for_run(run_dir: str | Path) -> tuple[np.ndarray, str]:
    """The audit's label distribution for a run: D-SINK surrogate labels (from the auxiliaries' probabilities the
    run stores), or the run's own predictions."""
    import torch

    from ..ot.surrogate import resolve_class_totals, surrogate_labels

    run = RunDir(run_dir)
    preds = run.read_predictions()
    cfg = run.load_config() if run.has_config() else None  # an average has none: its own predictions
    if cfg is None or cfg.method.name != "dsink":
        return preds["train_probs"], "predictions"
    p = cfg.method.params
    if not run.has_inputs():  # a run from before distillation runs stored their inputs
        raise InputError(f"{str(run_dir)!r} does not store its auxiliaries' probabilities; run `dsink eval "
                         f"{run_dir}` once (it stores them while the auxiliary runs are still in place), then audit it")
    aux, _, scores = run.read_inputs()
    pl, pn = aux["imbalance"], aux["noise"]
    if pl.shape != preds["train_probs"].shape or pn.shape != preds["train_probs"].shape:
        raise InputError(f"the auxiliary runs of {str(run_dir)!r} no longer match its training set; "
                         "re-run them or audit another run")
    totals = resolve_class_totals(p["class_totals"], scores)
    q = surrogate_labels(pn, pl, preds["train_probs"], eps=p["eps"] or None, cost=p.get("cost", "noise+target"),
                         class_totals=totals, tol=p["tol"],
                         max_iter=p["max_iter"], dtype=getattr(torch, p["solver_dtype"]))
    return np.asarray(q, dtype=np.float64), "surrogate labels"


def audit_run(run_dir: str | Path, out_csv: str | Path | None = None) -> dict[str, Any]:
    """Write the ranked flags of ``run_dir`` as CSV (default ``RUN/audit.csv``); returns a summary."""
    run = RunDir(run_dir)
    run_dir = run.path
    with run.lock(shared=True):
        run.require_finished("run", allow_unfinished=True)  # an audit of a partial run warns
        preds = run.read_predictions()
        probs, source = surrogate_for_run(run)
        info = run.read_eval()
        paths = run.read_sample_paths(len(preds["train_noisy"]))  # image data: each sample's file
        selection = run.read_selection(len(preds["train_noisy"]))  # a sample-selecting method's own decision
    given = preds["train_noisy"]
    s = audit_scores(probs, given)
    true = preds.get("train_true")
    names = info.get("class_names") or [str(c) for c in range(probs.shape[1])]
    counts = np.asarray(info.get("train_class_counts") or np.bincount(given, minlength=probs.shape[1]))
    if len(names) != probs.shape[1] or len(counts) != probs.shape[1]:
        raise InputError(f"{str(run.eval_path)!r} does not match the run's predictions ({probs.shape[1]} classes); "
                         f"evaluate the run again with `dsink eval {run_dir}`")
    order = np.flatnonzero(s["flagged"])
    order = order[np.argsort(-s["margin"][order], kind="stable")]
    buf = io.StringIO()
    w = csv.writer(buf)
    header = ["rank", "train_position", "dataset_index", "given_label", "given_name", "suggested_label",
              "suggested_name", "confidence", "given_prob", "margin"]
    if true is not None:
        header += ["true_label", "truly_mislabelled"]
    if paths is not None:
        header.insert(1, "path")
    if selection is not None:
        header += ["method_clean"] + (["method_label"] if "label" in selection else [])
    w.writerow(header)
    for rank, i in enumerate(order, 1):
        row = [rank, int(i), int(preds["train_index"][i]), int(given[i]), names[given[i]], int(s["suggested"][i]),
               names[s["suggested"][i]], f"{s['confidence'][i]:.6f}", f"{s['given_prob'][i]:.6f}", f"{s['margin'][i]:.6f}"]
        if true is not None:
            row += [int(true[i]), int(true[i] != given[i])]
        if paths is not None:
            row.insert(1, paths[i])
        if selection is not None:
            row += [f"{selection['clean'][i]:.6f}"] + ([int(selection["label"][i])] if "label" in selection else [])
        w.writerow(row)
    out_csv = Path(out_csv) if out_csv else run.audit_path
    atomic_write_text(out_csv, buf.getvalue())
    summary: dict[str, Any] = {"run": str(run_dir), "source": source, "num_train": int(len(given)),
                               "flagged": int(s["flagged"].sum()), "csv": str(out_csv)}
    if true is not None:
        summary.update(flag_quality(s["flagged"], given, true, counts))
    if selection is not None:
        judged_noisy = selection["clean"] < 0.5
        summary["method_judged_noisy"] = int(judged_noisy.sum())
        if true is not None:
            summary["method_selection"] = flag_quality(judged_noisy, given, true, counts)
    return summary
