"""Cost of a D-SINK epoch against a CE epoch of the same model (one process, and two under torchrun).

Trains CE and the D-SINK target (from f_L = LA and f_N = GCE trained first, not timed) with the offline default's
recipe (MLP, Fashion-MNIST-LT rho=100, 40 % uniform_excl_true) and compares the median epoch time (the
``time_s`` of each ``metrics.jsonl`` row: the training pass, D-SINK's refresh and the validation pass) and
the total training time (D-SINK with its defaults). Run it on an idle machine: the numbers are times.

Usage: python benchmarks/dsink_cost.py [--epochs 15] [--recipe mlp|cnn] [--torchrun] [--variant NAME=KEY=VALUE[,KEY=VALUE]...]
       [--out benchmarks/results/dsink_cost.json]

``--variant "tol 1e-4=tol=1e-4"`` also times a D-SINK target with those ``method.params`` (one row per variant).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dsink.config import load_config
from dsink.runs import RunDir
from dsink.train import distill_config, train_run
from recipes import RECIPES  # benchmarks/recipes.py


def epoch_times(run: Path) -> list[float]:
    return [r["time_s"] for r in RunDir(run).read_metrics()]


def start_times(run: Path) -> list[float]:
    """The method's epoch-start work per epoch (D-SINK: the refresh of Q)."""
    return [r.get("epoch_start_s", 0.0) for r in RunDir(run).read_metrics()]


def torchrun(args: list[str], cwd: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "dsink", *args, "-q"]
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--recipe", choices=list(RECIPES), default="mlp", help="the offline default's MLP, or the CPU CNN")
    ap.add_argument("--torchrun", action="store_true", help="also time both under torchrun with 2 gloo processes")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[,KEY=VALUE]",
                    help="also time D-SINK with these method.params (repeatable)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dsink_cost.json"))
    args = ap.parse_args()
    over = RECIPES[args.recipe] + [f"optim.epochs={args.epochs}"]
    report = {"meta": {"command": "python " + " ".join(sys.argv), "machine": platform.machine(),
                       "python": platform.python_version()}, "rows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for m in ("la", "gce"):
            train_run(load_config(None, over + [f"method.name={m}"]), tmp / m)
        t = time.perf_counter()
        train_run(load_config(None, over + ["method.name=ce"]), tmp / "ce")
        report["rows"]["ce"] = {"total_s": time.perf_counter() - t, "epochs": epoch_times(tmp / "ce"),
                                "starts": start_times(tmp / "ce")}
        t = time.perf_counter()
        train_run(distill_config(tmp / "la", tmp / "gce", None, over[-1:]), tmp / "dsink")
        report["rows"]["dsink"] = {"total_s": time.perf_counter() - t, "epochs": epoch_times(tmp / "dsink"),
                                   "starts": start_times(tmp / "dsink")}
        for i, spec in enumerate(args.variant):
            name, _, sets = spec.partition("=")
            if not sets:
                ap.error(f"--variant {spec!r}: expected NAME=KEY=VALUE[,KEY=VALUE]")
            params = [f"method.params.{kv}" for kv in sets.split(",")]
            t = time.perf_counter()
            train_run(distill_config(tmp / "la", tmp / "gce", None, over[-1:] + params), tmp / f"variant{i}")
            run = tmp / f"variant{i}"
            report["rows"][f"dsink, {name}"] = {"total_s": time.perf_counter() - t, "epochs": epoch_times(run),
                                               "starts": start_times(run), "params": params}
        if args.torchrun:
            sets = [a for o in over for a in ("--set", o)]
            for name, cmd in (("ce (torchrun 2)", ["train", "--method", "ce", *sets]),
                              ("dsink (torchrun 2)", ["distill", "--imbalance-run", str(tmp / "la"), "--noise-run",
                                                      str(tmp / "gce"), "--set", over[-1]])):
                out = tmp / f"torchrun-{name.split()[0]}"
                t = time.perf_counter()
                torchrun([*cmd, "--out", str(out)], tmp)
                report["rows"][name] = {"total_s": time.perf_counter() - t, "epochs": epoch_times(out),
                                        "starts": start_times(out)}
    print(f"{'run':<30}{'median epoch s':>16}{'refresh s':>11}{'total s':>10}{'epoch ratio':>13}{'total ratio':>13}")
    for name, r in report["rows"].items():
        base = report["rows"]["ce (torchrun 2)" if "torchrun" in name else "ce"]
        r["median_epoch_s"] = statistics.median(r["epochs"])
        r["median_refresh_s"] = statistics.median(r["starts"])
        r["epoch_ratio"] = r["median_epoch_s"] / statistics.median(base["epochs"])
        r["total_ratio"] = r["total_s"] / base["total_s"]
        print(f"{name:<30}{r['median_epoch_s']:>16.3f}{r['median_refresh_s']:>11.3f}{r['total_s']:>10.1f}{r['epoch_ratio']:>13.2f}{r['total_ratio']:>13.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
