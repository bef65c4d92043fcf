"""Cost of a D-SINK and a ``kd`` epoch against a CE epoch of the same model (one process, and two under torchrun).

Trains f_L = LA and f_N = GCE first (not timed), then CE, ``kd`` and the D-SINK target side by side in one
process, **interleaved epoch by epoch** (CE, kd, D-SINK, then the next epoch in a rotated order), so that
background load on a shared machine falls on all of them alike. Compared: the median epoch time (the ``time_s``
of each metrics row: the method's epoch-start work - D-SINK's refresh of Q -, the training pass and the
validation pass) and the sum of the epochs. Default recipe: the offline default's (MLP, Fashion-MNIST-LT rho=100,
40 % uniform_excl_true) on the CPU with one torch thread (``--threads``; two threads on two shared cores swing
by 10x under load).

Usage: python benchmarks/dsink_cost.py [--epochs 15] [--repeats 1] [--recipe mlp|cnn|none] [--config FILE]
       [--set KEY=VALUE ...] [--device cpu|cuda|cuda:N] [--threads 1] [--profile] [--torchrun]
       [--variant NAME=KEY=VALUE[,KEY=VALUE]...] [--out benchmarks/results/dsink_cost.json]

``--device cuda`` runs every model on the GPU (``train.device``; exit 2 with a message when CUDA is absent).
``--config configs/cifar10_lt100_uniform40.yaml --recipe none --set data.root=DIR --set "optim.milestones=[6,7]"
--epochs 8`` times the CIFAR-shaped ResNet-32 (benchmarks/gpu_check.sh; a ``dsink run`` config gives its shared
sections, and its auxiliaries are replaced by LA and GCE: they are not timed). ``--variant "tol 1e-4=tol=1e-4"`` also times a D-SINK target with those
``method.params``. ``--profile [EPOCHS]`` adds 3 (EPOCHS) more epochs of each model, not among the timed ones, with every part of
its step timed apart (the device synchronised around each part on CUDA): the per-step breakdown that says where
the distillation's extra time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from dsink.config import load_config, read_yaml_config
from dsink.data import build_data
from dsink.errors import InputError
from dsink.runs import RunDir
from dsink.train import distill_config, train_run
from dsink.train.api import resolve_config
from dsink.train.engine import Trainer, resolve_device
from dsink.train.inputs import method_inputs
from dsink.pipeline import load_pipeline
from recipes import RECIPES  # benchmarks/recipes.py


def run_config(path, overrides: list[str]):
    """The run config of ``path`` (a ``dsink train`` config, or a ``dsink run`` config - configs/*.yaml - whose
    shared sections are taken and whose pipeline section is dropped: the auxiliaries here are always LA and GCE,
    which leaves the target's epoch as it is) with ``overrides``."""
    if path is None or "pipeline" not in read_yaml_config(path):
        return load_config(path, overrides)
    method = [o for o in overrides if o.startswith("method.")]
    base, _ = load_pipeline(path, [o for o in overrides if not o.startswith("method.")])
    return load_config(None, method, base={k: v for k, v in base.to_dict().items() if k != "method"})


def trainer_for(cfg, run: Path) -> Trainer:
    """A Trainer writing into a fresh ``run``, its method's inputs resolved as ``train_run`` does."""
    cfg = resolve_config(cfg)
    data = build_data(cfg.data)
    shutil.rmtree(run, ignore_errors=True)
    rd = RunDir(run)
    inputs = method_inputs(cfg.method, data.fingerprint, rd, fresh_start=True)
    rd.prepare(cfg, resume=False, force=True)
    return Trainer(cfg, data, rd, inputs=inputs)


class PartTimer:
    """Wall time of named parts of a Trainer's epoch, by wrapping its objects from outside (the library is not
    touched); on CUDA the device is synchronised before and after each part so that its kernels count there."""

    def __init__(self, trainer: Trainer):
        self.t = trainer
        self.sums: dict[str, float] = defaultdict(float)
        self.sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
        self.active: list[str] = []

    def wrap(self, obj, attr: str, name: str) -> None:
        inner = getattr(obj, attr)

        def timed(*a, **k):
            if name == "forward" and "step" not in self.active:  # prediction passes count in their own part
                return inner(*a, **k)
            self.sync()
            self.active.append(name)
            t0 = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                self.sync()
                self.sums[name] += time.perf_counter() - t0
                self.active.pop()

        setattr(obj, attr, timed)

    def install(self) -> None:
        t, m = self.t, self.t.method
        for net in t.models.values():
            self.wrap(net, "forward", "forward")
        self.wrap(m, "training_step", "step")  # forward + the method's loss + its per-step bookkeeping
        self.wrap(t.optimizer, "step", "optimizer")
        self.wrap(t.optimizer, "zero_grad", "optimizer")
        self.wrap(m, "on_epoch_start", "epoch start (D-SINK: refresh of Q)")
        self.wrap(m, "on_epoch_end", "epoch end")
        self.wrap(t, "_run_epoch", "training pass")
        self.wrap(t, "_val_metrics", "validation pass")
        self.epochs = self.steps = 0

    def epoch(self) -> None:
        """Run one more epoch with its parts timed."""
        t = self.t
        backward = torch.Tensor.backward

        def timed_backward(tensor, *a, **k):
            self.sync()
            t0 = time.perf_counter()
            try:
                return backward(tensor, *a, **k)
            finally:
                self.sync()
                self.sums["backward"] += time.perf_counter() - t0

        torch.Tensor.backward = timed_backward
        try:
            row = t.fit(stop_after=t.epoch + 1)[-1]
        finally:
            torch.Tensor.backward = backward
        n = len(t.train_y)
        bs = min(t.cfg.optim.batch_size, n)
        self.steps += n // bs if n % bs == 1 else -(-n // bs)
        self.epochs += 1
        self.sums["epoch"] += row["time_s"]

    def result(self) -> dict:
        """Milliseconds per step of the step's parts and per epoch of the epoch's."""
        s = dict(self.sums)
        s["loss and per-step state (step - forward)"] = s.pop("step") - s["forward"]
        s["engine per step (inputs, lr, metrics)"] = (s["training pass"] - s["forward"] - s["backward"]
                                                      - s["optimizer"] - s["loss and per-step state (step - forward)"])
        return {"epochs": self.epochs, "steps": self.steps,
                "ms": {k: 1e3 * v / (self.epochs if k in PER_EPOCH else self.steps) for k, v in s.items()}}


PROFILE_ORDER = ("forward", "loss and per-step state (step - forward)", "backward", "optimizer",
                 "engine per step (inputs, lr, metrics)", "epoch start (D-SINK: refresh of Q)", "epoch end",
                 "validation pass", "epoch")
PER_EPOCH = {"epoch start (D-SINK: refresh of Q)", "epoch end", "validation pass", "epoch"}


def torchrun(args: list[str], cwd: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "dsink", *args, "-q"]
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=1, help="fresh CE/kd/D-SINK triples, one after the other")
    ap.add_argument("--recipe", choices=[*RECIPES, "none"], default="mlp",
                    help="the offline default's MLP, the CPU CNN, or none (the config's own recipe)")
    ap.add_argument("--config", default=None, help="a run config (YAML) beneath the recipe")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    ap.add_argument("--device", default="cpu", help="train.device of every model: cpu, cuda or cuda:N")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (train.num_threads; 0: torch's default)")
    ap.add_argument("--profile", type=int, nargs="?", const=3, default=0, metavar="EPOCHS",
                    help="also print the per-step breakdown of EPOCHS (3) more epochs of each model")
    ap.add_argument("--torchrun", action="store_true", help="also time CE and D-SINK under torchrun with 2 gloo processes")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[,KEY=VALUE]",
                    help="also time D-SINK with these method.params (repeatable)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dsink_cost.json"))
    args = ap.parse_args()
    try:
        device = resolve_device(args.device)
    except InputError as e:
        print(f"dsink_cost.py: {e}", file=sys.stderr)
        return 2
    variants = []
    for spec in args.variant:
        name, _, sets = spec.partition("=")
        if not sets:
            ap.error(f"--variant {spec!r}: expected NAME=KEY=VALUE[,KEY=VALUE]")
        variants.append((f"dsink, {name}", [f"method.params.{kv}" for kv in sets.split(",")]))
    recipe = [] if args.recipe == "none" else RECIPES[args.recipe]
    # the run's own settings: the recipe, the user's overrides, then what this benchmark fixes
    run_sets = [*args.set, f"train.device={device}", f"train.num_threads={args.threads}", "train.eval_test_every=0"]
    over = recipe + run_sets + [f"optim.epochs={args.epochs}"]
    # the timed models train one epoch more when profiling: that epoch is the profiled one, timed apart
    timed_over = run_sets + [f"optim.epochs={args.epochs + args.profile}"]
    report = {"meta": {"command": "python " + " ".join(sys.argv), "machine": platform.machine(),
                       "processor": platform.processor(), "cpus": os.cpu_count(), "python": platform.python_version(),
                       "torch": torch.__version__, "device": str(device), "threads": args.threads,
                       "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                       "load_before": os.getloadavg()}, "rows": {}}
    names = ["ce", "kd", "dsink"] + [v[0] for v in variants]
    epochs: dict[str, list[float]] = {n: [] for n in names}
    starts: dict[str, list[float]] = {n: [] for n in names}
    profiles: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for m in ("la", "gce"):
            train_run(run_config(args.config, over + [f"method.name={m}"]), tmp / m)
        aux = [f"method.params.imbalance_run={tmp / 'la'}", f"method.params.noise_run={tmp / 'gce'}"]
        for rep in range(args.repeats):
            cfgs = {"ce": run_config(args.config, recipe + timed_over + ["method.name=ce"]),
                    "kd": distill_config(tmp / "la", tmp / "gce", None, timed_over + ["method.name=kd", *aux]),
                    "dsink": distill_config(tmp / "la", tmp / "gce", None, timed_over)}
            cfgs.update({n: distill_config(tmp / "la", tmp / "gce", None, timed_over + p) for n, p in variants})
            trainers = {n: trainer_for(cfgs[n], tmp / f"run{rep}-{i}") for i, n in enumerate(names)}
            for e in range(args.epochs):
                k = e % len(names)  # rotate who goes first: no model always follows the same one
                for n in names[k:] + names[:k]:
                    row = trainers[n].fit(stop_after=e + 1)[-1]
                    epochs[n].append(row["time_s"])
                    starts[n].append(row.get("epoch_start_s", 0.0))
            if args.profile and rep == args.repeats - 1:
                timers = {n: PartTimer(trainers[n]) for n in names}
                for timer in timers.values():
                    timer.install()
                for e in range(args.profile):  # interleaved as the timed epochs
                    k = e % len(names)
                    for n in names[k:] + names[:k]:
                        timers[n].epoch()
                profiles = {n: timers[n].result() for n in names}
            del trainers
        if args.torchrun:
            sets = [a for o in over for a in ("--set", o)]
            for name, cmd in (("ce (torchrun 2)", ["train", "--method", "ce", *sets]),
                              ("dsink (torchrun 2)", ["distill", "--imbalance-run", str(tmp / "la"), "--noise-run",
                                                      str(tmp / "gce"), "--set", over[-1]])):
                out = tmp / f"torchrun-{name.split()[0]}"
                t = time.perf_counter()
                torchrun([*cmd, "--out", str(out)], tmp)
                rows = RunDir(out).read_metrics()
                epochs[name] = [r["time_s"] for r in rows]
                starts[name] = [r.get("epoch_start_s", 0.0) for r in rows]
    report["meta"]["load_after"] = os.getloadavg()
    print(f"{'run':<30}{'median epoch s':>16}{'refresh s':>11}{'sum s':>9}{'epoch ratio':>13}{'sum ratio':>11}")
    for name in epochs:
        base = "ce (torchrun 2)" if "torchrun" in name else "ce"
        r = {"epochs": epochs[name], "starts": starts[name], "median_epoch_s": statistics.median(epochs[name]),
             "median_refresh_s": statistics.median(starts[name]), "sum_s": sum(epochs[name])}
        r["epoch_ratio"] = r["median_epoch_s"] / statistics.median(epochs[base])
        r["sum_ratio"] = r["sum_s"] / sum(epochs[base])
        report["rows"][name] = r
        print(f"{name:<30}{r['median_epoch_s']:>16.4f}{r['median_refresh_s']:>11.4f}{r['sum_s']:>9.2f}"
              f"{r['epoch_ratio']:>13.3f}{r['sum_ratio']:>11.3f}")
    if profiles:
        report["profile"] = profiles
        print(f"\nwhere the time goes: {args.profile} more epochs of each model, every part timed apart "
              "(ms per step; the last four rows ms per epoch)")
        print(f"{'part':<44}" + "".join(f"{n:>12}" for n in names) + f"{'kd - ce':>10}{'dsink - ce':>12}")
        for part in PROFILE_ORDER:
            v = {n: profiles[n]["ms"].get(part, 0.0) for n in names}
            print(f"{part:<44}" + "".join(f"{v[n]:>12.3f}" for n in names)
                  + f"{v['kd'] - v['ce']:>+10.3f}{v['dsink'] - v['ce']:>+12.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
