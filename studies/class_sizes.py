"""How well each estimate of the training-set class sizes does, from cached auxiliary runs (f_L = LA, f_N = GCE).

D-SINK's transport needs class totals; a class that gets a total near zero can receive no surrogate mass, so a
*blind* f_N (one that predicts almost no sample of a class) makes D-SINK blind too (docs/research/rounds.md). This script
reads every pair of auxiliary runs that a pipeline cache holds (the ``average-la-...-gce-...`` entries that
``dsink run`` / ``studies/dsink_study.py`` write) and scores the estimates against the true training labels,
which only this report reads:

* ``f_N argmax`` (D-SINK's default), ``f_N soft``, ``f_L argmax`` (the previous default), ``noisy labels``;
* ``agreement floor``: f_N's argmax counts, raised per class to the number of samples whose noisy label and f_L's
  prediction agree (a candidate guard against a blind f_N, measured here before any code uses it).

Columns: L1 distance of the class shares; the smallest ratio estimate / true size over the classes (0 = a blind
class); the largest ratio (over-filled classes move head samples into the tail).

Usage: python studies/class_sizes.py CACHE [CACHE ...] [--out studies/results/class_sizes.json]
       (e.g. runs/study/cache after ``python studies/dsink_study.py --settings dev held_out ...``)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np


def estimates(pl: np.ndarray, pn: np.ndarray, noisy: np.ndarray) -> dict[str, np.ndarray]:
    c = pl.shape[1]
    count = lambda a: np.bincount(a, minlength=c).astype(float)  # noqa: E731
    agree = count(noisy[pl.argmax(1) == noisy])
    fn = count(pn.argmax(1))
    return {"f_N argmax": fn, "f_N soft": pn.sum(0), "f_L argmax": count(pl.argmax(1)), "noisy labels": count(noisy),
            "agreement floor": np.maximum(fn, agree)}


def score(est: np.ndarray, true: np.ndarray) -> dict[str, float]:
    share, ratio = est / est.sum(), est * true.sum() / (est.sum() * true)
    return {"l1": float(np.abs(share - true / true.sum()).sum()), "min_ratio": float(ratio.min()),
            "max_ratio": float(ratio.max())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("caches", nargs="+", help="pipeline cache folders (pipeline.cache_dir)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "class_sizes.json"))
    args = ap.parse_args()
    from dsink.runs import RunDir

    rows = []
    for cache in map(Path, args.caches):
        for avg in sorted(cache.glob("average-la-*-gce-*")):
            m = re.fullmatch(r"average-(la-.+-[0-9a-f]+)-(gce-.+-[0-9a-f]+)", avg.name)
            runs = [RunDir(cache / m.group(1)), RunDir(cache / m.group(2))] if m else []
            if not runs or not all(r.predictions_path.exists() for r in runs):
                continue
            la, gce = (r.read_predictions() for r in runs)
            if "train_true" not in la:
                continue
            d = runs[0].load_config().data
            true = np.bincount(la["train_true"], minlength=la["train_probs"].shape[1]).astype(float)
            row = {"setting": f"rho={d.imbalance_ratio:g} {d.noise_mode} {d.noise_rate:g}", "data_seed": d.data_seed,
                   "n_train": int(true.sum()), "estimates": {k: score(v, true) for k, v in
                                                               estimates(la["train_probs"], gce["train_probs"],
                                                                         la["train_noisy"]).items()}}
            rows.append(row)
    if not rows:
        print("no cached pairs of LA and GCE runs with true labels found", file=sys.stderr)
        return 2
    names = list(rows[0]["estimates"])
    print("| setting | seed | N | " + " | ".join(f"{n}: L1 / min / max" for n in names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for r in sorted(rows, key=lambda r: (r["setting"], r["data_seed"], r["n_train"])):
        cells = [f"{e['l1']:.3f} / {e['min_ratio']:.2f} / {e['max_ratio']:.2f}" for e in r["estimates"].values()]
        print(f"| {r['setting']} | {r['data_seed']} | {r['n_train']} | " + " | ".join(cells) + " |")
    mean = {n: {k: float(np.mean([r["estimates"][n][k] for r in rows])) for k in ("l1", "min_ratio", "max_ratio")}
            for n in names}
    print("| mean | | | " + " | ".join(f"{mean[n]['l1']:.3f} / {mean[n]['min_ratio']:.2f} / {mean[n]['max_ratio']:.2f}"
                                     for n in names) + " |")
    Path(args.out).write_text(json.dumps({"command": "python " + " ".join(sys.argv), "rows": rows, "mean": mean},
                                         indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
