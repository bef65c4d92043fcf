"""The first surrogate labels D-SINK builds when ``trust`` replaces f_N by f_L, computed offline from stored runs
(research log, docs/research/regimes.md, candidates 12-14).

For each seed of one regime of a ``benchmarks/regimes.py`` result file, the stored f_L (its selected checkpoint, as
D-SINK reads it) and f_N probabilities and the noisy labels build D-SINK with the defaults and ``trust_fill`` set to
``raw``, ``prior`` or ``em`` (f_L moved to a class prior re-estimated by EM on f_L itself, Saerens et al. 2002; only
here, not a library option). The student is taken to start from f_L's last epoch, as ``init=fit`` does. Reported:
the training split's accuracy of Q's balanced reading (Q divided by its class shares: what the adjusted distillation
makes f output) against the *true* training labels - plain and class-balanced (the training set is long-tailed, so
the plain figure is the head's) - beside f_L's own, and the totals' shares of the two rarest classes. A diagnostic:
the true labels of the training split are read, never the test split's, and nothing is chosen on it.

The result files name the runs' folders in the regimes cache (``--work`` of benchmarks/regimes.py), which must
still exist. Seconds on 2 cores.

Usage: python studies/first_q.py RESULT.json REGIME [--path KEY/KEY...] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import torch

from dsink.methods.base import MethodContext
from dsink.methods.dsink import DSink, DSinkParams
from dsink.ot.surrogate import class_totals_from
from dsink.runs import RunDir
from dsink.train.inputs import validation_score


class _Start:
    """The trainer D-SINK's first refresh asks for f's probabilities: f at its start (f_L's last epoch)."""

    def __init__(self, probs: torch.Tensor, labels: torch.Tensor):
        self.probs, self.train_y = probs, labels

    def predict_logits(self, split, rows=None):
        return self.probs[rows].log()


def em_prior(p: torch.Tensor, iters: int = 200) -> torch.Tensor:
    """The class prior under which ``p`` (a balanced posterior) explains its own rows: EM fixed point."""
    pi = torch.full((p.shape[1],), 1.0 / p.shape[1])
    for _ in range(iters):
        pi = torch.softmax(p.clamp_min(1e-30).log() + pi.log(), 1).mean(0)
    return pi


def first_q(f_l: dict, f_n: dict, mode: str) -> tuple[np.ndarray, bool]:
    """D-SINK's first Q for ``mode`` (raw | prior | em), and whether trust acted."""
    noisy = f_l["train_noisy"]
    n, c = f_l["train_probs"].shape
    scores = {"imbalance": validation_score({"val_probs": f_l["best_val_probs"], "val_noisy": f_l["val_noisy"]}),
              "noise": validation_score({"val_probs": f_n["val_probs"], "val_noisy": f_n["val_noisy"]})}
    ctx = MethodContext(num_classes=c, class_counts=np.bincount(noisy, minlength=c), num_train=n, epochs=1,
                        device=torch.device("cpu"), noise_rate=0.0, labels=noisy, aux_scores=scores,
                        aux_probs={"imbalance": f_l["best_train_probs"].astype(np.float32),
                                   "noise": f_n["train_probs"].astype(np.float32)})
    d = DSink(DSinkParams(trust_fill="raw" if mode == "em" else mode), ctx)
    if d.unfit != "noise":
        return np.empty(0), False
    if mode == "em":
        d.p_noise = torch.softmax(d.p_imb.log() + em_prior(d.p_imb).log(), 1)
        d.totals = class_totals_from(d.p_imb, "noise_argmax", float(n), False, p_noise=d.p_noise)
        d.t = d.totals.double() * (n / d.totals.double().sum())
    d.started_from = "imbalance"
    d.on_epoch_start(0, _Start(torch.as_tensor(f_l["train_probs"]).float(), torch.as_tensor(noisy)))
    return d.Q.numpy(), True


def accuracies(probs: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    pred = probs.argmax(1)
    per_class = [float((pred[true == k] == k).mean()) for k in np.unique(true)]
    return float((pred == true).mean()), float(np.mean(per_class))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("result", help="a benchmarks/regimes.py result file")
    ap.add_argument("regime", help="the regime's name in it")
    ap.add_argument("--path", default="regimes", help="keys down to the regimes' dict, /-separated (default regimes)")
    ap.add_argument("--out", help="also write the figures as JSON here")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    node = json.load(open(args.result))
    for key in args.path.split("/"):
        node = node[key]
    rows = {r["method"]: r["runs"] for r in node[args.regime]["rows"]}
    fl = next(k for k in rows if k.startswith("f_L"))
    fn = next(k for k in rows if k.startswith("f_N"))
    record = []
    print("| seed | f_L (last) plain / balanced | raw | prior | em | rarest two: true / raw / prior / em |")
    print("|---|---|---|---|---|---|")
    for seed, (run_l, run_n) in enumerate(zip(rows[fl], rows[fn])):
        f_l, f_n = RunDir(run_l).read_predictions(), RunDir(run_n).read_predictions()
        true = f_l["train_true"]
        cells, figures = [], {"f_L": accuracies(f_l["train_probs"], true)}
        shares = [np.bincount(true, minlength=f_l["train_probs"].shape[1])[-2:] / len(true)]
        for mode in ("raw", "prior", "em"):
            q, acted = first_q(f_l, f_n, mode)
            if not acted:
                cells.append("trust does not act")
                continue
            pi = q.mean(0).clip(1e-12)
            figures[mode] = accuracies(q / pi, true)
            cells.append("%.3f / %.3f" % figures[mode])
            shares.append(pi[-2:])
        tail = " / ".join("%.3f, %.3f" % tuple(s) for s in shares)
        print(f"| {seed} | %.3f / %.3f | {' | '.join(cells)} | {tail} |" % figures["f_L"])
        record.append({"seed_position": seed, "plain_and_balanced": figures,
                       "rarest_two_shares": [[float(x) for x in sh] for sh in shares]})
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"result": args.result, "regime": args.regime, "path": args.path, "rows": record}, f, indent=1)


if __name__ == "__main__":
    main()
