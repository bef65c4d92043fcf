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
import torch

import class_sizes  # studies/class_sizes.py: the estimates and the score this report shares
from dsink.ot.surrogate import confident_class_sizes
from dsink.runs import RunDir


def estimates(pl: np.ndarray, pn: np.ndarray, noisy: np.ndarray) -> dict[str, np.ndarray]:
    """class_sizes.py's estimates that this report keeps, the average's argmax counts, and confident learning's
    (the library's :func:`dsink.ot.surrogate.confident_class_sizes`) on the average, on f_L and on f_N."""
    base = class_sizes.estimates(pl, pn, noisy)
    avg = 0.5 * (pl + pn)
    cl = lambda p: confident_class_sizes(torch.as_tensor(p), torch.as_tensor(noisy)).numpy()  # noqa: E731
    return {"f_N argmax": base["f_N argmax"], "f_L argmax": base["f_L argmax"],
            "average argmax": np.bincount(avg.argmax(1), minlength=pl.shape[1]).astype(float),
            "agreement floor": base["agreement floor"], "CL average": cl(avg), "CL f_L": cl(pl), "CL f_N": cl(pn)}


def score(est: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """(L1 distance of the class shares, smallest estimate / true ratio): class_sizes.py's score."""
    sc = class_sizes.score(est, true)
    return sc["l1"], sc["min_ratio"]


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
