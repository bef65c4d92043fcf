"""Class-total estimators scored against the true training class sizes in every regime of ``benchmarks/regimes.py``.

Reads the D-SINK runs of the pipelines a ``regimes.py --work DIR`` folder holds (through ``dsink.runs.RunDir``: the
auxiliaries' training-set probabilities D-SINK was given, and the noisy and, for this report only, the true
training labels) and scores each estimate of the class sizes:

* ``f_N argmax`` (D-SINK's default ``noise_argmax``), ``f_L argmax``, ``average argmax``;
* ``agreement floor``: f_N's argmax counts raised per class to the samples whose noisy label f_L predicts;
* ``CL average`` / ``CL f_L`` / ``CL f_N``: the class marginal of confident learning's calibrated confident joint
  (Northcutt et al., JAIR 2021: per-class thresholds = mean self-confidence of the samples labelled with the
  class; each sample counted under its noisy label and the most probable class above its threshold; rows
  rescaled to the noisy label counts), on the average of f_L and f_N or on one of them.

Columns: L1 distance of the class shares (0-2), the smallest estimate / true ratio (0 = a class emptied).

Usage: python studies/totals_regimes.py WORK/full/pipelines/VARIANT [--out studies/results/totals_regimes.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dsink.runs import RunDir


def confident_joint_marginal(p: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """Confident learning's estimate of the true class sizes from probabilities ``p`` (N, C) and noisy labels."""
    n, c = p.shape
    counts = np.bincount(noisy, minlength=c).astype(float)
    thresh = np.array([p[noisy == j, j].mean() if counts[j] else np.inf for j in range(c)])
    above = p >= thresh[None, :]
    masked = np.where(above, p, -1.0)
    star = masked.argmax(1)
    ok = above.any(1)
    joint = np.zeros((c, c))
    np.add.at(joint, (noisy[ok], star[ok]), 1.0)
    rows = joint.sum(1, keepdims=True)
    empty = rows[:, 0] == 0
    joint[empty] = 0.0
    joint[empty, np.flatnonzero(empty)] = 1.0  # a label with no confident sample keeps its own count
    joint = joint / joint.sum(1, keepdims=True) * counts[:, None]
    return joint.sum(0)


def estimates(pl: np.ndarray, pn: np.ndarray, noisy: np.ndarray) -> dict[str, np.ndarray]:
    c = pl.shape[1]
    count = lambda a: np.bincount(a, minlength=c).astype(float)  # noqa: E731
    avg = 0.5 * (pl + pn)
    fn = count(pn.argmax(1))
    return {"f_N argmax": fn, "f_L argmax": count(pl.argmax(1)), "average argmax": count(avg.argmax(1)),
            "agreement floor": np.maximum(fn, count(noisy[pl.argmax(1) == noisy])),
            "CL average": confident_joint_marginal(avg, noisy), "CL f_L": confident_joint_marginal(pl, noisy),
            "CL f_N": confident_joint_marginal(pn, noisy)}


def score(est: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    s, t = est / est.sum(), true / true.sum()
    return float(np.abs(s - t).sum()), float((s / t).min())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pipelines", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    report: dict[str, dict] = {}
    for res in sorted(args.pipelines.glob("*/results.json")):
        rows = {r["method"]: r["runs"] for r in json.loads(res.read_text())["rows"]}
        for run in rows.get("D-SINK", []):
            rd = RunDir(run)
            if not rd.has_inputs():
                continue
            given, p = rd.read_inputs()[0], rd.read_predictions()
            if "train_true" not in p:
                continue
            est = estimates(given["imbalance"], given["noise"], p["train_noisy"])
            true = np.bincount(p["train_true"], minlength=est["f_L argmax"].size).astype(float)
            key = f"{res.parent.name}/{Path(run).name}"
            report[key] = {k: score(v, true) for k, v in est.items()}
    names = list(next(iter(report.values())))
    print("| run | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for key, sc in report.items():
        print(f"| {key} | " + " | ".join(f"{a:.3f} ({b:.2f})" for a, b in sc.values()) + " |")
    regimes = sorted({k.split("/")[0].split("-s")[0] for k in report})
    print("\nmean L1 per regime")
    for r in regimes:
        ks = [k for k in report if k.split("/")[0].split("-s")[0] == r]
        print(f"| {r} | " + " | ".join(f"{np.mean([report[k][n][0] for k in ks]):.3f} ({min(report[k][n][1] for k in ks):.2f})"
                                       for n in names) + " |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
