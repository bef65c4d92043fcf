"""Checkpoint-selection rules without clean labels, measured against the test-best epoch.

Reads the per-epoch curves that ``studies/dsink_study.py`` records (test accuracy, noisy validation accuracy
and its class-balanced version) and, for every method and rule, reports how far the rule's epoch is from the
epoch with the best test accuracy: the test top-1 lost (regret, points) and the distance in epochs. The test
curve is used only to score the rules, never by a rule.

Rules: ``last`` (the last epoch), ``val`` (best noisy-validation accuracy; the engine's rule before this
benchmark), ``val_bal`` (best class-balanced noisy-validation accuracy: mean recall over the noisy labels),
``label_wave`` (the first minimum of the share of training predictions that change between epochs; no
validation data; curves recorded since ``train_pred_changes`` exists, the last epoch for older files).

Usage: python studies/selection.py [RESULTS.json ...] [--out studies/results/selection.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

def label_wave(c: dict, window: int = 3, patience: int = 3) -> int:
    """Label Wave (Yuan et al., ICLR 2025): the epoch of the first minimum of the training-set prediction
    changes (``train_pred_changes``, a moving average over ``window`` epochs), found by stopping once the
    average has not reached a new minimum for ``patience`` epochs; the last epoch when the curve is missing.
    Needs no validation data. ``window`` and ``patience`` are fixed here, not tuned."""
    pc = c.get("train_pred_changes") or []
    if not pc or pc[-1] is None:
        return len(c["test_acc"]) - 1
    first = next(i for i, v in enumerate(pc) if v is not None)  # epoch 1 has no previous prediction
    v = np.asarray(pc[first:], dtype=float)
    best, best_e, since = np.inf, len(pc) - 1, 0
    for i in range(window - 1, len(v)):
        avg = v[i - window + 1 : i + 1].mean()
        if avg < best:
            best, best_e, since = avg, first + i, 0
        else:
            since += 1
            if since >= patience:
                break
    return best_e


RULES = {
    "last": lambda c: len(c["test_acc"]) - 1,
    "val": lambda c: int(np.argmax(c["val_acc"])),
    "val_bal": lambda c: int(np.argmax(c["val_bal_acc"])),
    "label_wave": label_wave,
}


def score(curves: dict) -> dict[str, tuple[float, int]]:
    test = np.asarray(curves["test_acc"], dtype=float)
    best = int(np.argmax(test))
    return {name: (100 * (test[best] - test[rule(curves)]), abs(best - rule(curves))) for name, rule in RULES.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="*", default=sorted(str(p) for p in (Path(__file__).parent / "results").glob("dsink_study_*.json")))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "selection.json"))
    args = ap.parse_args()
    table: dict[str, dict[str, list]] = {}
    for path in args.results:
        for setting, methods in json.loads(Path(path).read_text())["results"].items():
            for method, recs in methods.items():
                for rec in recs or []:
                    c = rec.get("curves")
                    if not c or not c.get("test_acc") or None in c["test_acc"] or None in c.get("val_bal_acc", [None]):
                        continue
                    for rule, (regret, dist) in score(c).items():
                        table.setdefault(method, {}).setdefault(rule, []).append((regret, dist, setting))
    print(f"{'method':<55}" + "".join(f"{r + ' regret':>15}{'epochs':>8}" for r in RULES))
    summary = {}
    for method, rules in table.items():
        row = {r: {"regret": float(np.mean([x[0] for x in v])), "epochs": float(np.mean([x[1] for x in v])), "n": len(v)}
               for r, v in rules.items()}
        summary[method] = row
        print(f"{method:<55}" + "".join(f"{row[r]['regret']:>15.2f}{row[r]['epochs']:>8.1f}" for r in RULES))
    overall = {r: float(np.mean([summary[m][r]["regret"] for m in summary])) for r in RULES}
    print(f"{'mean over methods':<55}" + "".join(f"{overall[r]:>15.2f}{'':>8}" for r in RULES))
    Path(args.out).write_text(json.dumps({"inputs": args.results, "per_method": summary, "mean": overall}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
