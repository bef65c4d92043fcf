"""The auxiliary zoo on the CPU: every registry method on one long-tailed noisy Fashion-MNIST setting, and
D-SINK over several (f_L, f_N) pairs (the paper's "universal combiner" claim).

Setting: the offline default of ``dsink run`` (``dsink.pipeline.CPU_RECIPE``: Fashion-MNIST-LT rho=100,
40 % uniform_excl_true noise, MLP 784-256-256-10, Adam 1e-3, 15 epochs, batch 128). Each method keeps its
paper defaults except the schedules counted in epochs, scaled to the 15-epoch budget: co-teaching's
forget-rate ramp 5 epochs (paper: 10 of 200), DivideMix's warm-up 3 and ramp-up 5 epochs (paper: 10 and
16 of 300). DRW/DRS start at 80 % of training as in the papers. Reported per method: test top-1,
macro-F1, many/medium/few-shot accuracy (last epoch), label correction on the training set, top-1 of the
best-noisy-validation checkpoint, and training time (the sum of the epochs' ``time_s`` in metrics.jsonl,
so cached runs keep their time).

Usage: python benchmarks/zoo.py [--seeds 0] [--pairs la:gce la:coteaching ...] [--work runs/zoo] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from dsink.config import MethodConfig
from dsink.methods import METHOD_REGISTRY, method_info
from dsink.pipeline import cache_run_dir, load_pipeline, metric_stats, role_config
from dsink.runs import RunDir
from dsink.train import distill_config, train_run

EPOCH_SCHEDULES = {"coteaching": {"ramp_epochs": 5}, "coteaching_la": {"ramp_epochs": 5},
                   "dividemix": {"warmup_epochs": 3, "rampup_epochs": 5}}
DEFAULT_PAIRS = ["la:gce", "la:coteaching", "la:elr", "bs:gce", "ldam_drw:gce", "la:dividemix"]


def _train_seconds(run: Path) -> float:
    return sum(row["time_s"] for row in RunDir(run).read_metrics())


def _summary(reports: list[dict], seconds: list[float]) -> dict:
    return {**metric_stats(reports), "seconds": statistics.fmean(seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--pairs", nargs="*", default=DEFAULT_PAIRS, help="D-SINK pairs f_L:f_N")
    ap.add_argument("--work", default="runs/zoo", help="cache of the trained runs (an interrupted run continues)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "zoo.json"))
    args = ap.parse_args()
    base, pipe = load_pipeline(None)
    work = Path(args.work)
    methods = [m for m in METHOD_REGISTRY if m != "dsink"]  # registration order
    runs: dict[str, list[Path]] = {}
    results: dict[str, dict] = {}
    t0 = time.time()

    def record(name, role, reports, seconds):
        results[name] = {"role": role, **_summary(reports, seconds)}
        r = results[name]
        print(f"{name:<24}{role:<10}{100 * r['top1']:>7.2f}{100 * r['few_acc']:>7.2f}"
              f"{100 * r['top1_best_val']:>9.2f}{r['seconds']:>8.0f} s", flush=True)

    print(f"{'method':<24}{'role':<10}{'top-1':>7}{'few':>7}{'@bestval':>9}{'time':>10}")
    for m in methods:
        reports, seconds = [], []
        for seed in args.seeds:
            cfg = role_config(base, pipe, "baseline", MethodConfig(m, dict(EPOCH_SCHEDULES.get(m, {}))), seed)
            run = cache_run_dir(cfg, work)
            reports.append(train_run(cfg, run, resume=True))
            seconds.append(_train_seconds(run))
            runs.setdefault(m, []).append(run)
        record(m, method_info(m)["role"], reports, seconds)
    for pair in args.pairs:
        imb, noise = pair.split(":")
        reports, seconds = [], []
        for i, _ in enumerate(args.seeds):
            cfg = distill_config(runs[imb][i], runs[noise][i])
            run = cache_run_dir(cfg, work)
            reports.append(train_run(cfg, run, resume=True))
            seconds.append(_train_seconds(run))
        record(f"D-SINK({imb}, {noise})", "target", reports, seconds)
    meta = {"command": "python benchmarks/zoo.py " + " ".join(
                [f"--seeds {' '.join(map(str, args.seeds))}"] + (["--pairs " + " ".join(args.pairs)]
                                                                 if args.pairs != DEFAULT_PAIRS else [])),
            "machine": platform.machine(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "seconds": time.time() - t0, "schedules": EPOCH_SCHEDULES}
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"\ntotal {time.time() - t0:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
