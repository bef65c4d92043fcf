"""Early stopping on the noisy validation split, for the claims benchmark's runs (no training).

Every run keeps the checkpoint with the best noisy-validation accuracy (``checkpoints/best.pt``; its test
metrics are ``eval.json["best"]``; for the naive average, the average of the two auxiliaries' best
checkpoints). This script reads the runs named in a ``benchmarks/claims.py`` result and tabulates the
top-1 of those checkpoints next to the last epoch's, mean +- std over the seeds. The choice of epoch uses
the noisy validation split only, never the test split.

Usage: python studies/claims_best_val.py [--claims benchmarks/results/claims.json] [--out FILE]
(the run directories of that result must still exist, e.g. ``runs/claims/cache``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dsink.pipeline import mean_std
from dsink.runs import RunDir

HERE = Path(__file__).parent
CLAIMS = HERE.parent / "benchmarks" / "results" / "claims.json"  # benchmarks/claims.py's result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--claims", default=str(CLAIMS), help="a claims.py result")
    ap.add_argument("--out", default=str(HERE / "results" / "claims_best_val.json"))
    args = ap.parse_args()
    claims = json.loads(Path(args.claims).read_text())
    settings = []
    for s in claims["settings"]:
        rows = []
        for r in s["rows"]:
            evals = [RunDir(d).read_eval() for d in r["runs"]]
            last = mean_std([e["last"]["top1"] for e in evals])
            best = mean_std([e["best"]["top1"] for e in evals])
            rows.append({"method": r["method"], "top1_last": last, "top1_best_val": best,
                         "best_epochs": [e["best"]["epoch"] for e in evals]})
        settings.append({"setting": s["setting"], "rows": rows})
        print(f"\n{s['setting']} ({len(r['runs'])} seeds; top-1 %, mean ± std)")
        print("| method | last epoch | best noisy-val checkpoint | its epochs |\n|---|---|---|---|")
        top = max(x["top1_best_val"][0] for x in rows)
        for x in rows:
            (lm, ls), (bm, bs) = x["top1_last"], x["top1_best_val"]
            mark = "**" if bm == top else ""
            epochs = ", ".join(map(str, x["best_epochs"])) if any(x["best_epochs"]) else "each auxiliary's own"
            print(f"| {x['method']} | {100 * lm:.2f} ± {100 * ls:.2f} | {mark}{100 * bm:.2f} ± {100 * bs:.2f}{mark} | "
                  f"{epochs} |")
    Path(args.out).write_text(json.dumps({"command": "python studies/claims_best_val.py", "claims": args.claims,
                                          "settings": settings}, indent=2))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
