"""Where `kd`'s edge over D-SINK comes from (docs/research/rounds.md, ninth round): a diagnosis of finished study runs.

Reads the pipeline caches that ``studies/dsink_study.py`` fills (``--work DIR`` -> ``DIR/cache``), pairs every
default D-SINK run with the ``kd``, f_L (LA) and f_N (GCE) runs of the same setting and data seed, and reports:

1. **D-SINK minus kd, per seed** (last-epoch test top-1, points), and how the difference splits over classes:
   the confusable pair of Fashion-MNIST's head and its hardest medium class (T-shirt 0 / Shirt 6), pullover 2 /
   coat 4, and the rest (each class is a tenth of the balanced test top-1). Test numbers are reported, never used
   to choose anything.
2. **Who under-fits the hard class** (validation split, its *true* labels, which no method reads): recall of
   classes 0 and 6 for D-SINK's target, f_N moved to a balanced output (f_N / pi, pi = f_N's argmax shares) and f_L.
3. **Could better class totals close the gap?** For each estimate of the training class sizes, its L1 error and
   the error on class 6, and a training-set proxy that needs no training: D-SINK's transport rebuilt from the
   stored f_N, f_L and the target's final training probabilities with those totals, scored by the class-balanced
   accuracy of argmax Q / pi against the true training labels (the blind vote's row replacement is left out).
   Estimates: f_N argmax (the default), f_N soft sums, noisy-label counts de-mixed with a transition read from
   f_N's confident samples ("anchors"), and the true counts (an oracle, the upper bound).
4. **Is kd's stronger adjustment the answer?** With Q built as D-SINK builds it (f_N's argmax totals), the same
   proxy for the decision argmax Q / pi_adj: pi_adj = Q's own class shares (what logit-adjusted distillation
   learns), the true shares, and Q's shares to the power 1.5 (an over-adjustment like kd's, whose target holds
   f_L's already balanced posterior and is adjusted again).
5. **The noisy label as evidence** (``label_evidence=transition``, twelfth round): the same proxy and the accuracy of
   argmax Q against the true training labels, with f_N or f_N's posterior given the noisy label in the cost.

Usage: python studies/kd_gap.py CACHE [CACHE ...] [--out studies/results/kd_gap.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls

from dsink.eval import per_class_accuracy as recall
from dsink.methods.distill import KDParams
from dsink.methods.dsink import DSinkParams


def label_posterior(p_noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """f_N's posterior given each sample's noisy label (the twelfth round's proxy; the library's `label_evidence`
    knob was removed after that round rejected it): ``p_N(k|x_i) T[k, y~_i]`` renormalised over k, with T the
    noisy-label histogram of the training samples weighted by f_N's class probabilities, one pseudo-count per row."""
    c = p_noise.shape[1]
    counts = torch.zeros(c, c, dtype=torch.float64)
    counts.index_add_(1, labels, p_noise.double().T)
    counts += 1.0 / c
    t = counts / counts.sum(1, keepdim=True)
    post = p_noise.double() * t[:, labels].T
    return post / post.sum(1, keepdim=True).clamp_min(1e-300)
from dsink.ot import surrogate_labels
from dsink.runs import RunDir

from class_sizes import estimates  # studies/class_sizes.py

PAIRS = {"T-shirt+shirt": (0, 6), "pullover+coat": (2, 4)}
RUN_PATHS = ("imbalance_run", "noise_run")


def is_default(params: dict, kind=DSinkParams) -> bool:
    """A run with today's default knobs of its method (only the auxiliary run paths may differ; a knob the run's
    config does not hold did not exist yet, which is its default)."""
    want = {k: v for k, v in dataclasses.asdict(kind()).items() if k not in RUN_PATHS}
    return all(params.get(k, v) == v for k, v in want.items())


def anchor_totals(p_noise: np.ndarray, noisy: np.ndarray, q: float = 0.5) -> np.ndarray:
    """Noisy-label counts de-mixed with a transition estimated from f_N's confident samples: row c of T is the
    noisy-label histogram of the samples f_N predicts as c with a probability above that class's q-quantile."""
    c = p_noise.shape[1]
    pred, t = p_noise.argmax(1), np.eye(c)
    for k in range(c):
        mine = pred == k
        if mine.any():
            sure = mine & (p_noise[:, k] >= np.quantile(p_noise[mine, k], q))
            t[k] = np.bincount(noisy[sure], minlength=c) / sure.sum()
    share, _ = nnls(t.T, np.bincount(noisy, minlength=c) / len(noisy))
    return share * len(noisy)


def rebuilt_q(pn, pl, p_target_balanced, totals) -> tuple[np.ndarray, np.ndarray]:
    """D-SINK's transport rebuilt with the given totals (f = the target's balanced output moved to their prior);
    returns Q and the totals' shares."""
    t = np.maximum(totals.astype(float), 1e-9)
    pi = t / t.sum()
    f = p_target_balanced * pi
    f /= f.sum(1, keepdims=True)
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = surrogate_labels(as_t(pn), as_t(pl), as_t(f), class_totals=t, cost="noise+imbalance+target").numpy()
    return q, pi


def balanced_accuracy(q: np.ndarray, prior: np.ndarray, y: np.ndarray) -> float:
    """Class-balanced accuracy of argmax q / prior against the true labels."""
    return float(np.nanmean(recall((q / np.maximum(prior, 1e-300)).argmax(1), y, len(prior))))


def collect(caches: list[Path]) -> dict:
    runs = defaultdict(dict)  # (setting, data seed) -> role -> RunDir
    for cache in caches:
        for path in sorted(p for p in cache.iterdir() if p.is_dir()):
            rd = RunDir(path)
            if not rd.predictions_path.exists() or not rd.has_config():
                continue
            cfg = rd.load_config()
            name, d = cfg.method.name, cfg.data
            key = (f"rho={d.imbalance_ratio:g} {d.noise_mode} {d.noise_rate:g}", d.data_seed)
            params = dict(cfg.method.params or {})
            if name == "dsink" and is_default(params):
                runs[key]["dsink"] = rd
                runs[key]["la"], runs[key]["gce"] = RunDir(params["imbalance_run"]), RunDir(params["noise_run"])
            elif name == "kd" and is_default(params, KDParams):
                runs[key]["kd"] = rd
    return {k: v for k, v in runs.items() if {"dsink", "kd", "la", "gce"} <= set(v)}


def diagnose(roles: dict) -> dict:
    ds, kd, la, gce = (roles[r].read_predictions() for r in ("dsink", "kd", "la", "gce"))
    c = ds["test_probs"].shape[1]
    y_test = ds["test_labels"]
    gap = 100 / c * (recall(kd["test_probs"].argmax(1), y_test, c) - recall(ds["test_probs"].argmax(1), y_test, c))
    split = {name: float(gap[list(ix)].sum()) for name, ix in PAIRS.items()}
    split["rest"] = float(gap.sum() - sum(split.values()))
    pn, pl, y, noisy = gce["train_probs"], la["train_probs"], ds["train_true"], ds["train_noisy"]
    true = np.bincount(y, minlength=c).astype(float)
    default = estimates(pl, pn, noisy)  # the estimates studies/class_sizes.py scores, D-SINK's default first
    totals = {k: default[k] for k in ("f_N argmax", "f_N soft")}
    totals.update({"anchors": anchor_totals(pn, noisy), "true (oracle)": true})
    est, rebuilt = {}, {}
    for k, t in totals.items():
        share = t / t.sum()
        rebuilt[k] = rebuilt_q(pn, pl, ds["train_probs"], t)
        est[k] = {"l1": float(np.abs(share - true / true.sum()).sum()),
                  "class6_rel_err": float(share[6] / (true[6] / true.sum()) - 1),
                  "balanced_q_acc": balanced_accuracy(*rebuilt[k], y)}
    q, pi = rebuilt["f_N argmax"]  # D-SINK's Q and its prior (f_N's argmax shares)
    # the noisy label as evidence (label_evidence=transition): f_N's posterior given the label in f_N's place
    post = label_posterior(torch.as_tensor(pn, dtype=torch.float64), torch.as_tensor(noisy)).numpy()
    q_label, _ = rebuilt_q(post, pl, ds["train_probs"], totals["f_N argmax"])
    label = {"balanced_q_acc": [balanced_accuracy(q, pi, y), balanced_accuracy(q_label, pi, y)],
             "q_acc": [float((q.argmax(1) == y).mean()), float((q_label.argmax(1) == y).mean())]}
    val = {"D-SINK": ds["val_probs"], "f_N / pi": gce["val_probs"] / np.maximum(pi, 1e-12), "f_L": la["val_probs"]}
    val_recall = {k: recall(p.argmax(1), ds["val_true"], c)[[0, 6]].tolist() for k, p in val.items()}
    adjust = {k: balanced_accuracy(q, p, y) for k, p in
              {"Q's shares": pi, "true shares": true / true.sum(), "Q's shares ^ 1.5": pi ** 1.5}.items()}
    return {"dsink_minus_kd": -float(gap.sum()), "kd_minus_dsink_by_classes": split, "val_recall_0_6": val_recall,
            "totals": est, "adjustment": adjust, "label_evidence": label}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("caches", nargs="+", type=Path, help="pipeline cache folders (e.g. runs/study/cache)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "kd_gap.json"))
    args = ap.parse_args()
    found = collect(args.caches)
    if not found:
        print("no setting with default D-SINK, kd, LA and GCE runs (with true labels) found", file=sys.stderr)
        return 2
    cells = {f"{s} seed {seed}": diagnose(r) for (s, seed), r in sorted(found.items())}
    by_setting = defaultdict(list)
    for (s, _), r in zip(sorted(found), cells.values()):
        by_setting[s].append(r)
    rho = lambda s: float(s.split()[0][4:])  # noqa: E731
    print("| setting | seeds | D-SINK - kd (per seed) | mean ± SE | kd - D-SINK: T-shirt+shirt / pullover+coat / rest "
          "| val recall T-shirt, shirt: D-SINK / f_N/pi / f_L |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for s in sorted(by_setting, key=lambda s: (rho(s), s)):
        rs = by_setting[s]
        d = np.array([r["dsink_minus_kd"] for r in rs])
        se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
        parts = rs[0]["kd_minus_dsink_by_classes"]
        sp = {k: float(np.mean([r["kd_minus_dsink_by_classes"][k] for r in rs])) for k in parts}
        vr = {k: np.mean([r["val_recall_0_6"][k] for r in rs], 0) for k in rs[0]["val_recall_0_6"]}
        summary[s] = {"dsink_minus_kd": d.tolist(), "mean": float(d.mean()), "se": float(se), "split": sp,
                      "val_recall_0_6": {k: v.tolist() for k, v in vr.items()},
                      "totals": {k: {m: float(np.mean([r["totals"][k][m] for r in rs])) for m in rs[0]["totals"][k]}
                                 for k in rs[0]["totals"]}}
        print(f"| {s} | {len(d)} | {', '.join(f'{x:+.2f}' for x in d)} | {d.mean():+.2f} ± {se:.2f} | "
              + " / ".join(f"{v:+.2f}" for v in sp.values()) + " | "
              + " / ".join(f"{100 * v[0]:.0f}, {100 * v[1]:.0f}" for v in vr.values()) + " |")
    names = list(next(iter(cells.values()))["totals"])
    print("\n| totals | L1 of the class shares | class 6 (shirt) relative error | balanced accuracy of argmax Q / pi |")
    print("|---|---|---|---|")
    overall = {}
    for k in names:
        m = {q: float(np.mean([c["totals"][k][q] for c in cells.values()])) for q in ("l1", "class6_rel_err",
                                                                                   "balanced_q_acc")}
        overall[k] = m
        print(f"| {k} | {m['l1']:.3f} | {100 * m['class6_rel_err']:+.0f} % | {100 * m['balanced_q_acc']:.2f} |")
    adj_names = list(next(iter(cells.values()))["adjustment"])
    print("\n| setting | " + " | ".join(f"argmax Q / ({k})" for k in adj_names) + " |")
    print("|---|" + "---|" * len(adj_names))
    adjust = {}
    for s in sorted(by_setting, key=lambda s: (rho(s), s)):
        adjust[s] = {k: float(np.mean([r["adjustment"][k] for r in by_setting[s]])) for k in adj_names}
        print(f"| {s} | " + " | ".join(f"{100 * v:.2f}" for v in adjust[s].values()) + " |")
    adjust["mean"] = {k: float(np.mean([c["adjustment"][k] for c in cells.values()])) for k in adj_names}
    print("| mean | " + " | ".join(f"{100 * v:.2f}" for v in adjust["mean"].values()) + " |")
    print("\n| setting | balanced accuracy of argmax Q / pi: f_N / f_N given the label | argmax Q accuracy: f_N / "
          "f_N given the label |")
    print("|---|---|---|")
    label = {}
    for s in sorted(by_setting, key=lambda s: (rho(s), s)):
        label[s] = {k: np.mean([r["label_evidence"][k] for r in by_setting[s]], 0).tolist()
                    for k in ("balanced_q_acc", "q_acc")}
        print(f"| {s} | " + " | ".join(f"{100 * a:.2f} / {100 * b:.2f}" for a, b in label[s].values()) + " |")
    Path(args.out).write_text(json.dumps({"command": "python " + " ".join(sys.argv), "settings": summary,
                                          "totals_overall": overall, "adjustment": adjust, "label_evidence": label,
                                          "cells": cells}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
