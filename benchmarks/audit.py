"""Label audit against the known noise: dsink audit (D-SINK surrogate labels) versus cleanlab.

On the claims benchmark's Fashion-MNIST-LT settings (the runs are reused from its cache, or trained),
for each training seed: the flagged set of ``dsink audit`` on the D-SINK run, and cleanlab's
``find_label_issues`` (default ``filter_by="prune_by_noise_rate"``) on the training-set probabilities of
f_N and of the D-SINK target. Precision / recall of each flagged set against the injected noise,
overall and for the tail (the 3 smallest classes). cleanlab is a benchmark-only dependency.

Note: cleanlab asks for out-of-sample probabilities (cross-validation); both dsink and cleanlab here
use the in-sample predictions of the trained runs, which is what a user of the pipeline has.

Usage: python benchmarks/audit.py [--quick] [--seeds 0 1 2] [--work runs/claims] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from claims import SETTINGS, base_overrides  # noqa: E402

from dsink.eval.audit import audit_run, flag_quality  # noqa: E402
from dsink.eval.evaluate import load_predictions  # noqa: E402
from dsink.pipeline import load_pipeline, run_pipeline  # noqa: E402
from dsink.runs import RunDir  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", default="runs/claims")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from cleanlab.filter import find_label_issues

    out = Path(args.out or Path(__file__).parent / "results" / f"audit{'_quick' if args.quick else ''}.json")
    results = []
    for rho, mode, rate in SETTINGS:
        name = f"rho={rho:g}, {mode} {rate}"
        over = base_overrides(args.quick) + [f"data.imbalance_ratio={rho}", f"data.noise_mode={mode}", f"data.noise_rate={rate}",
                                            "pipeline.seeds=[" + ",".join(map(str, args.seeds)) + "]",
                                            f"pipeline.cache_dir={args.work}/cache", "pipeline.baselines=[]",
                                            "pipeline.combined=[]", f"pipeline.out={args.work}/audit-{rho:g}-{mode}"]
        base, pipe = load_pipeline(None, over)
        res = run_pipeline(base, pipe)
        target = next(r for r in res["rows"] if r["role"] == "target")["runs"]
        noise = next(r for r in res["rows"] if r["role"] == "noise")["runs"]
        per: dict[str, list] = {"dsink audit (surrogate labels)": [], "cleanlab on f_N": [], "cleanlab on D-SINK": []}
        for t_run, n_run in zip(target, noise):
            s = audit_run(t_run, RunDir(t_run).audit_path)
            per["dsink audit (surrogate labels)"].append({k: s[k] for k in ("overall", "tail")})
            info = RunDir(t_run).read_eval()
            counts = np.asarray(info["train_class_counts"])
            for label, run in (("cleanlab on f_N", n_run), ("cleanlab on D-SINK", t_run)):
                p = load_predictions(run)
                flags = find_label_issues(labels=p["train_noisy"], pred_probs=p["train_probs"].astype(np.float64))
                per[label].append(flag_quality(flags, p["train_noisy"], p["train_true"], counts))
        entry = {"setting": name, "methods": {}}
        print(f"\n## {name}")
        print("| method | flagged | precision | recall | tail precision | tail recall |")
        print("|---|---|---|---|---|---|")
        for label, items in per.items():
            agg = {}
            for part in ("overall", "tail"):
                for k in ("flagged", "precision", "recall"):
                    vals = [it[part][k] for it in items if it[part][k] is not None]
                    agg[f"{part}_{k}"] = float(np.mean(vals)) if vals else None
            entry["methods"][label] = agg

            def f(v):
                return "-" if v is None else f"{100 * v:.1f}"
            print(f"| {label} | {agg['overall_flagged']:.0f} | {f(agg['overall_precision'])} | {f(agg['overall_recall'])} | "
                  f"{f(agg['tail_precision'])} | {f(agg['tail_recall'])} |")
        results.append(entry)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "settings": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
