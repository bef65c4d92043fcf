"""D-SINK's class_totals=auto rule on the MLP recipe: which auxiliary it picks, and what that costs where it picks f_L.

For each setting and seed (data seed = training seed), f_L (LA) and f_N (GCE) are trained with the offline MLP
recipe (`dsink train configs/fmnist_lt_mlp.yaml --method la|gce` plus the setting's data flags). The rule picks f_L
when f_L's class-balanced noisy-validation accuracy is higher (dsink.ot.surrogate.resolve_class_totals). Where it
picks f_L, D-SINK is distilled twice (`dsink distill ... --set method.params.class_totals=noise_argmax|argmax`) and
both are reported: top-1 (last epoch), top-1 at the selected checkpoint, label correction. No choice is made on the
test split. About 10 min on 2 cores.

Usage: python studies/totals_rule.py [--work /tmp/dsink-totals-rule] [--out studies/results/totals_rule.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SETTINGS = {"dev r100": (100, "uniform_excl_true", 0.4, [1, 2]), "dev r10": (10, "uniform_excl_true", 0.4, [1, 2]),
            "csp r50": (50, "class_size_prop", 0.3, [3, 4, 5]), "pair r20": (20, "pair_random", 0.3, [3, 4, 5]),
            "incl r200": (200, "uniform_incl_true", 0.5, [3, 4, 5])}


def _dsink(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "dsink", *args, "-q"], check=True, capture_output=True)


def _eval(run: Path) -> dict:
    from dsink.runs import RunDir

    ev = RunDir(run).read_eval()
    return {"top1": ev["last"]["top1"], "top1_best_val": (ev.get("best") or {}).get("top1"),
            "correction_rate": (ev.get("train") or {}).get("correction_rate")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/dsink-totals-rule")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "totals_rule.json"))
    args = ap.parse_args()
    from dsink.ot.surrogate import resolve_class_totals
    from dsink.runs import RunDir
    from dsink.train.inputs import validation_score

    work, rows = Path(args.work), []
    for name, (rho, mode, rate, seeds) in SETTINGS.items():
        data = ["--set", f"data.imbalance_ratio={rho}", "--set", f"data.noise_mode={mode}",
                "--set", f"data.noise_rate={rate}"]
        for s in seeds:
            cell = work / f"{name.replace(' ', '_')}-{s}"
            runs = {m: Path(f"{cell}-{m}") for m in ("la", "gce")}
            for m, run in runs.items():
                if not RunDir(run).has_eval():
                    _dsink("train", "configs/fmnist_lt_mlp.yaml", "--method", m, *data, "--set", f"data.data_seed={s}",
                           "--set", f"train.seed={s}", "--out", str(run))
            scores = {role: validation_score(RunDir(runs[m]).read_predictions())
                      for role, m in (("imbalance", "la"), ("noise", "gce"))}
            pick = resolve_class_totals("auto", scores)
            row = {"setting": name, "seed": s, "val_bal_acc": scores, "pick": pick,
                   "f_L": _eval(runs["la"]), "f_N": _eval(runs["gce"])}
            if pick == "argmax":
                for totals in ("noise_argmax", "argmax"):
                    out = Path(f"{cell}-dsink-{totals}")
                    if not RunDir(out).has_eval():
                        _dsink("distill", "--imbalance-run", str(runs["la"]), "--noise-run", str(runs["gce"]),
                               "--set", f"method.params.class_totals={totals}", "--seed", str(s), "--out", str(out))
                    row[f"dsink_{totals}"] = _eval(out)
            rows.append(row)
            d, a = row.get("dsink_noise_argmax"), row.get("dsink_argmax")
            cells = (f"{100 * d['top1']:.2f} | {100 * a['top1']:.2f} | {100 * d['correction_rate']:.2f} -> "
                     f"{100 * a['correction_rate']:.2f}") if a else "= | = | ="
            print(f"| {name} | {s} | {'f_L' if pick == 'argmax' else 'f_N'} | {cells} |", flush=True)
    Path(args.out).write_text(json.dumps({"command": "python " + " ".join(sys.argv), "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
