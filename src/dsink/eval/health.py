"""Is each auxiliary fit for the data? A check run before every distillation, and the row to deploy.

D-SINK and ``kd`` can be no better than what their auxiliaries know. A noise-robust loss down-weights
low-confidence samples, and a rare class's samples are low-confidence, so f_N can treat a tail class as noise and
never predict it; a short or tiny training can leave an auxiliary below plain CE. :func:`auxiliary_health` finds
this from what every run saves (its training-set and validation probabilities and the noisy labels; never test
labels) and names the better choice; :func:`target_health` does the same for the distilled target after training.
:func:`deploy_row` picks the row to deploy from the check (the target unless something is unfit), not from the noisy
validation score, which does not rank different methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..methods.dsink import BLIND_RATIO, TRUST_MARGIN, blind_classes
from ..runs import RunDir
from .metrics import per_class_accuracy

RECALL_FLOOR = 0.2  # a class's noisy-validation recall is "near 0" below BLIND_RATIO x the other's, if the other's
#                     is at least this
CE_MARGIN = 0.05  # an auxiliary "below CE" scores this much under CE's noisy-validation balanced accuracy, both at
#                   their selected checkpoints: the noisy split ranks close methods poorly (all six rows of the
#                   offline default score 0.362-0.369 while their test top-1 spans 66-81 %), so only a clear gap counts
FIXES = {"noise": "a stronger f_N (e.g. pipeline.noise.name=elr, or sce); where f_N has also collapsed (no prediction "
                  f"for a quarter of the classes) and scores {TRUST_MARGIN:g} below f_L on the noisy validation split, "
                  "D-SINK's defaults already follow f_L from its weights (pipeline.target.trust=collapse, init=fit; "
                  "pipeline.target.trust_margin=0 drops the score condition)",
         "imbalance": "another f_L (e.g. pipeline.imbalance.name=bs or ldam_drw)"}
ROLE_NAMES = {"imbalance": "f_L", "noise": "f_N", "baseline": "CE"}


def balanced_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present in ``labels`` of the share of their samples predicted as that class (the
    selection rule's score, as :func:`dsink.train.inputs.validation_score` computes it)."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    return float(np.nanmean(class_recall(probs, labels, probs.shape[1])))  # NaN: classes without samples


def class_recall(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class recall of ``probs``' argmax against ``labels`` (NaN for a class without samples)."""
    return per_class_accuracy(np.asarray(probs).argmax(1), np.asarray(labels), num_classes)


def _arrays(run: str | Path, selected: bool) -> dict[str, np.ndarray]:
    """A run's training and validation probabilities (at its selected checkpoint when ``selected`` and saved) and
    the noisy labels."""
    pred = RunDir(run).read_predictions()
    pick = (lambda s: pred.get(f"best_{s}_probs", pred[f"{s}_probs"])) if selected else (lambda s: pred[f"{s}_probs"])
    return {"train": pick("train"), "val": pick("val") if "val_probs" in pred else None,
            "train_noisy": pred["train_noisy"], "val_noisy": pred.get("val_noisy")}


def _names(run: str | Path, num_classes: int) -> list[str]:
    try:
        names = RunDir(run).read_eval().get("class_names")
    except InputError:  # no readable evaluation report: class indices
        names = None
    return [str(n) for n in names] if names and len(names) == num_classes else [str(k) for k in range(num_classes)]


def _warn(role: str, label: str, kind: str, message: str, classes: list[int] | None = None) -> dict[str, Any]:
    return {"role": role, "method": label, "kind": kind, "classes": classes or [], "message": message}


def auxiliary_health(imbalance_run: str | Path, noise_run: str | Path, *, ce_run: str | Path | None = None,
                     labels: dict[str, str] | None = None, selected_imbalance: bool = True) -> dict[str, Any]:
    """Check f_L and f_N (and compare them with CE when ``ce_run`` is given) on what their runs saved.

    ``labels``: the row names by role (default ``f_L``/``f_N``). f_L is read at its selected checkpoint when
    ``selected_imbalance`` (what D-SINK reads by default), f_N at its last epoch. Returns ``warnings`` (each with
    ``role``, ``method``, ``kind``: ``blind_class`` | ``zero_recall`` | ``below_ce``, ``classes``, ``message``
    naming the better choice), ``scores`` (class-balanced noisy-validation accuracy by role) and ``ok``.
    """
    labels = {**ROLE_NAMES, **(labels or {})}
    runs = {"imbalance": _arrays(imbalance_run, selected_imbalance), "noise": _arrays(noise_run, False)}
    scored = {"imbalance": _arrays(imbalance_run, True), "noise": _arrays(noise_run, True)}  # like for like
    if ce_run is not None:
        scored["baseline"] = _arrays(ce_run, True)
    c = runs["noise"]["train"].shape[1]
    names = _names(noise_run, c)
    y = runs["noise"]["train_noisy"]
    scores = {role: balanced_accuracy(a["val"], a["val_noisy"]) if a["val"] is not None and len(a["val_noisy"])
              else None for role, a in scored.items()}
    warnings = []
    for role, other in (("noise", "imbalance"), ("imbalance", "noise")):
        me, them = labels[role], labels[other]
        blind = blind_classes(runs[role]["train"], runs[other]["train"], y)
        if blind:
            warnings.append(_warn(role, me, "blind_class", (
                f"{me} hardly predicts class(es) {', '.join(names[k] for k in blind)} on the training set, which "
                f"{them} predicts in agreement with their labels; the distilled target inherits the gap. Better: "
                f"{FIXES[role]}"), blind))
        warnings += _recall_warnings(runs, role, other, me, them, names, blind)
    if scores.get("baseline") is not None:
        for role in ("imbalance", "noise"):
            if scores[role] is not None and scores[role] < scores["baseline"] - CE_MARGIN:
                warnings.append(_warn(role, labels[role], "below_ce", (
                    f"{labels[role]} scores below CE on the noisy validation split (class-balanced accuracy "
                    f"{scores[role]:.3f} vs {scores['baseline']:.3f}): it under-fits this data. Better: "
                    f"{FIXES[role]}")))
    return {"ok": not warnings, "warnings": warnings, "scores": scores}


def _recall_warnings(runs, role, other, me, them, names, already) -> list[dict[str, Any]]:
    """Classes whose noisy-validation recall is near 0 for ``role`` while ``other`` recalls them."""
    a, b = runs[role], runs[other]
    if a["val"] is None or a["val_noisy"] is None or not len(a["val_noisy"]):
        return []
    c = a["val"].shape[1]
    ra, rb = class_recall(a["val"], a["val_noisy"], c), class_recall(b["val"], b["val_noisy"], c)
    zero = [int(k) for k in range(c) if k not in already and rb[k] >= RECALL_FLOOR and ra[k] < BLIND_RATIO * rb[k]]
    if not zero:
        return []
    worst = ", ".join(f"{names[k]} ({ra[k]:.2f} vs {rb[k]:.2f})" for k in zero)
    return [_warn(role, me, "zero_recall", (
        f"{me}'s recall on the noisy validation split is near 0 for class(es) {worst} where {them} recalls them. "
        f"Better: {FIXES[role]}"), zero)]


def target_health(target_run: str | Path, imbalance_run: str | Path, noise_run: str | Path, *,
                  label: str = "D-SINK") -> list[dict[str, Any]]:
    """After training: the target is blind to a class that an auxiliary predicts in agreement with its noisy labels
    (the auxiliaries' rule, applied to the target against each of them; e.g. a distillation collapsed onto a few
    classes after too short a training). Returns the warnings (role ``target``), empty when it is fit."""
    tgt = _arrays(target_run, False)
    y = tgt["train_noisy"]
    names = _names(target_run, tgt["train"].shape[1])
    blind: set[int] = set()
    for run, selected in ((imbalance_run, True), (noise_run, False)):
        blind |= set(blind_classes(tgt["train"], _arrays(run, selected)["train"], y))
    if not blind:
        return []
    classes = sorted(blind)
    return [_warn("target", label, "blind_class", (
        f"{label} hardly predicts class(es) {', '.join(names[k] for k in classes)} on the training set, which its "
        f"auxiliaries predict in agreement with their labels (a distillation that did not learn them, e.g. after too "
        f"short a training). Better: deploy an auxiliary, or train longer (optim.epochs)"), classes)]


def unfit_roles(health: dict[str, Any] | None) -> list[str]:
    """The roles the check calls unfit, which the row to deploy avoids: the target when it is blind to a class its
    auxiliaries see; an auxiliary below CE; an auxiliary blind to a class, or recalling one near 0, *and* scoring
    TRUST_MARGIN below the other auxiliary on the noisy validation split (D-SINK's ``trust=validated`` rule). A blind
    class alone is not enough: a noise-robust loss that is competent overall can miss one confusable class (the MLP
    with SCE misses one; D-SINK, which guards such classes, is 10 points above f_L there)."""
    h = health or {}
    scores = h.get("scores") or {}
    out = set()
    for w in h.get("warnings", []):
        role = w.get("role")
        other = {"imbalance": "noise", "noise": "imbalance"}.get(role)
        if role == "target" or w.get("kind") == "below_ce":
            out.add(role)
        elif other and scores.get(role) is not None and scores.get(other) is not None \
                and scores[role] < scores[other] - TRUST_MARGIN:
            out.add(role)
    return sorted(out)


def deploy_row(rows: list[dict[str, Any]], health: dict[str, Any] | None) -> dict[str, Any] | None:
    """The row to deploy, without test labels: the target (D-SINK) when the health check found it and its auxiliaries
    fit (what it is built for); otherwise the auxiliary the check does not call unfit (:func:`unfit_roles`; both
    unfit: the CE baseline; only the target: the auxiliary with the higher noisy-validation score,
    ``health["scores"]``). The noisy validation split does not rank different methods reliably (all rows of the
    offline default score within 0.01 of each other in class-balanced noisy-validation accuracy while their test
    top-1 spans 15 points), so it does not choose between them. None when the rows hold no target."""
    by_role = {r["role"]: r["method"] for r in rows}
    if "target" not in by_role:
        return None
    flagged = unfit_roles(health)
    if not flagged:
        return {"method": by_role["target"], "rule": "the target: the health check found neither it nor an auxiliary "
                                                     "unfit"}
    if flagged == ["target"]:  # both auxiliaries fit: the one the noisy validation split scores higher
        scores = (health or {}).get("scores") or {}
        fit = sorted(("imbalance", "noise"), key=lambda r: -(scores.get(r) or 0.0))
    else:
        fit = [role for role in ("imbalance", "noise") if role not in flagged]
    fit = [role for role in fit if role in by_role]
    choice = by_role[fit[0]] if fit else by_role.get("baseline", by_role["target"])
    names = " and ".join(by_role.get(r, r) for r in flagged)
    # an unfit auxiliary: the distilled rows inherit it, or (D-SINK's trust=collapse) follow the other one alone from
    # its weights, which ended 0.6-4.1 points below that auxiliary on four of eight unseen convolutional settings
    # (docs/research/regimes.md): the fit auxiliary is the safer row to deploy either way
    why = ("the distilled target did not learn what its auxiliaries know" if flagged == ["target"] else
           "the distilled rows inherit it or follow the other auxiliary alone")
    return {"method": choice, "rule": f"the health check flagged {names} ({why}): deploy {choice} (see the health "
                                      "warnings)"}


__all__ = ["auxiliary_health", "balanced_accuracy", "blind_classes", "class_recall", "deploy_row", "target_health",
           "unfit_roles"]
