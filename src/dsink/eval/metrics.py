"""Evaluation metrics of the field (docs/reference.md#metrics): top-1, macro-F1, per-class and shot-group accuracy,
label-correction rate and precision/recall of flagged labels."""

from __future__ import annotations

import numpy as np


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Accuracy of each class (NaN for a class absent from ``labels``)."""
    hits = np.bincount(labels, weights=(pred == labels).astype(float), minlength=num_classes)
    n = np.bincount(labels, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hits / np.maximum(n, 1), np.nan)


def macro_f1(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over classes present in ``labels`` or ``pred``."""
    tp = np.bincount(labels[pred == labels], minlength=num_classes).astype(float)
    fp = np.bincount(pred, minlength=num_classes) - tp
    fn = np.bincount(labels, minlength=num_classes) - tp
    denom = 2 * tp + fp + fn
    present = denom > 0
    return float(np.mean(2 * tp[present] / denom[present])) if present.any() else 0.0


def shot_groups(train_counts: np.ndarray, many: int = 100, few: int = 20) -> dict[str, np.ndarray]:
    """Class indices in the many/medium/few-shot groups.

    More than 10 classes: many > ``many``, few < ``few`` training samples (true-label counts).
    At most 10 classes: the classes ranked by training count (largest first, ties by index)
    are split 3/4/3 (for 10 classes; 30 %/40 %/30 % in general) - on a long-tailed profile in
    index order this is the class-index split 0-2 / 3-6 / 7-9.
    """
    counts = np.asarray(train_counts)
    c = len(counts)
    if c > 10:
        return {
            "many": np.flatnonzero(counts > many),
            "medium": np.flatnonzero((counts <= many) & (counts >= few)),
            "few": np.flatnonzero(counts < few),
        }
    order = np.argsort(-counts, kind="stable")
    k = int(round(0.3 * c))
    return {"many": np.sort(order[:k]), "medium": np.sort(order[k : c - k]), "few": np.sort(order[c - k :])}


def classification_report(probs: np.ndarray, labels: np.ndarray, train_counts: np.ndarray) -> dict:
    """Top-1, macro-F1, per-class accuracy and shot-group accuracy (mean of per-class accuracies)."""
    num_classes = probs.shape[1]
    pred = probs.argmax(1)
    pc = per_class_accuracy(pred, labels, num_classes)
    out = {
        "top1": float((pred == labels).mean()) if len(labels) else float("nan"),
        "macro_f1": macro_f1(pred, labels, num_classes),
        "per_class_acc": [None if np.isnan(a) else float(a) for a in pc],
    }
    for g, idx in shot_groups(train_counts).items():
        vals = pc[idx]
        vals = vals[~np.isnan(vals)]
        out[f"{g}_acc"] = float(vals.mean()) if len(vals) else None
    return out


def label_diagnostics(pred: np.ndarray, given: np.ndarray, true: np.ndarray) -> dict:
    """Training-set diagnostics against known true labels.

    ``correction_rate``: share of noisy-labelled samples (given != true) predicted as their true label.
    ``flag_precision`` / ``flag_recall``: samples flagged (prediction != given label) against the truly noisy ones.
    """
    noisy = given != true
    flagged = pred != given
    n_noisy, n_flag = int(noisy.sum()), int(flagged.sum())
    return {
        "noise_rate": float(noisy.mean()) if len(noisy) else 0.0,
        "correction_rate": float((pred[noisy] == true[noisy]).mean()) if n_noisy else None,
        "train_acc_true": float((pred == true).mean()) if len(true) else None,
        "flagged": n_flag,
        "flag_precision": float((flagged & noisy).sum() / n_flag) if n_flag else None,
        "flag_recall": float((flagged & noisy).sum() / n_noisy) if n_noisy else None,
    }
