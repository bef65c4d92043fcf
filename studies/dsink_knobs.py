"""Measure D-SINK's open knobs to choose its defaults - selected on the noisy validation split.

The knobs: docs/dsink.md#knobs-methodparams-of-methodname-dsink.

Setting (fast, CPU): Fashion-MNIST-LT (exp, rho in {10, 100}), uniform_excl_true 0.4, MLP 784-256-256-10,
Adam 1e-3, 15 epochs, batch 128, no augmentation; f_L = logit-adjusted CE (tau 1), f_N = GCE (q 0.7).
Each variant changes D-SINK's defaults in one or two knobs. Reported: noisy-validation accuracy (the
selection criterion), test top-1 and few-shot accuracy (last epoch), and test top-1 of the checkpoint with
the best noisy-validation accuracy (early stopping chosen without the test split); mean over training seeds.

Usage: python studies/dsink_knobs.py [--seeds 0 1] [--ratios 100 10] [--variants NAME ...]
       [--out studies/results/dsink_knobs.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from dsink.config import load_config
from dsink.eval.evaluate import load_predictions
from dsink.eval.metrics import classification_report
from dsink.runs import RunDir
from dsink.train import distill_config, train_run

BASE = ["model.name=mlp", "optim.optimizer=adam", "optim.lr=0.001", "optim.weight_decay=0", "optim.epochs=15",
        "optim.schedule=constant", "train.augment=false", "data.noise_mode=uniform_excl_true", "data.noise_rate=0.4"]
VARIANTS = {
    "paper-literal (soft totals, L_Base none)": ["method.params.class_totals=soft", "method.params.base_loss=none"],
    "argmax totals, L_Base none": ["method.params.base_loss=none"],
    "argmax totals, L_Base CE (default)": [],
    "argmax totals, L_Base LA": ["method.params.base_loss=la"],
    "soft totals, L_Base LA": ["method.params.class_totals=soft"],
    "default + init from f_N": ["method.params.init=noise"],
    "default + Q from training pass": ["method.params.target_probs=train"],
    "default + alpha 0.5": ["method.params.alpha=0.5"],
    "default + alpha 2": ["method.params.alpha=2"],
    "L_Base GCE (f_N's loss)": ["method.params.base_loss=gce"],
    "L_Base GCE + init from f_N": ["method.params.base_loss=gce", "method.params.init=noise"],
    "default + Q refreshed every 3 epochs": ["method.params.refresh_every=3"],
}


def _val_acc(run: Path) -> float:
    rows = RunDir(run).read_metrics()
    return rows[-1]["val_acc"]


def _record(run: Path) -> dict:
    ev = RunDir(run).read_eval()
    return {"val": _val_acc(run), "top1": ev["last"]["top1"], "few": ev["last"]["few_acc"],
            "top1_best_val": ev["best"]["top1"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--ratios", type=float, nargs="+", default=[100, 10])
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="NAME",
                    help="D-SINK variants to run (default: all)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dsink_knobs.json"))
    args = ap.parse_args()
    results = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for rho in args.ratios:
            for seed in args.seeds:
                over = BASE + [f"data.imbalance_ratio={rho}", f"train.seed={seed}"]
                runs = {}
                for m in ("ce", "la", "gce"):
                    runs[m] = Path(tmp) / f"{rho}-{seed}-{m}"
                    train_run(load_config(None, over + [f"method.name={m}"]), runs[m])
                rec = results.setdefault(str(rho), {})
                for m in runs:
                    rec.setdefault(m, []).append(_record(runs[m]))
                pl, pn = load_predictions(runs["la"]), load_predictions(runs["gce"])
                avg = (pl["test_probs"] + pn["test_probs"]) / 2
                counts = np.bincount(pl["train_true"], minlength=10)
                rep = classification_report(avg, pl["test_labels"], counts)
                val_avg = float(((pl["val_probs"] + pn["val_probs"]).argmax(1) == pl["val_noisy"]).mean())
                rec.setdefault("naive average f_L+f_N", []).append({"val": val_avg, "top1": rep["top1"], "few": rep["few_acc"],
                                                                    "top1_best_val": rep["top1"]})
                for name in args.variants:
                    extra = VARIANTS[name]
                    run = Path(tmp) / f"{rho}-{seed}-{abs(hash(name))}"
                    cfg = distill_config(runs["la"], runs["gce"], None, extra)
                    train_run(cfg, run)
                    rec.setdefault(f"D-SINK: {name}", []).append(_record(run))
                print(f"rho={rho} seed={seed} done ({time.time() - t0:.0f} s)", flush=True)
    summary = {}
    for rho, rec in results.items():
        print(f"\nrho = {rho:>5}  ({len(args.seeds)} seeds; mean %)")
        print(f"{'method':<52}{'val(noisy)':>11}{'test top1':>11}{'few-shot':>10}{'top1@best val':>15}")
        for name, rs in rec.items():
            v, t, f, b = (100 * np.mean([r[k] for r in rs]) for k in ("val", "top1", "few", "top1_best_val"))
            summary.setdefault(rho, {})[name] = {"val": v, "top1": t, "few": f, "top1_best_val": b, "runs": rs}
            print(f"{name:<52}{v:>11.2f}{t:>11.2f}{f:>10.2f}{b:>15.2f}")
    command = (f"python studies/dsink_knobs.py --seeds {' '.join(map(str, args.seeds))} --ratios "
               f"{' '.join(f'{r:g}' for r in args.ratios)}"
               + ("" if args.variants == list(VARIANTS) else " --variants " + " ".join(repr(v) for v in args.variants)))
    Path(args.out).write_text(json.dumps({"command": command, "base": BASE, "results": summary}, indent=2))


if __name__ == "__main__":
    main()
