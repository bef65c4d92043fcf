"""Sinkhorn solver speed: dsink.ot.sinkhorn against POT and against this machine's memory bandwidth.

Problems are D-SINK-shaped: log-kernel L = (log softmax(z1) + log softmax(z2)) / 2 (eps = 2) with
random logits, unit sample marginal, long-tailed class marginal (column sums of a skewed softmax).
For each (N, C): our solver (float64, tol 1e-6, and float32, tol max(1e-5, 2e-7 sqrt(N)) - its default,
above float32's summation error floor; tol is the relative L1 marginal error), and POT's variants (sinkhorn, sinkhorn_log, sinkhorn_stabilized; numpy and torch inputs; the slower
log variant above 1M entries only when plain is not correct, the much slower stabilised one only when
neither is and N*C <= 1M)
at an equivalent stopping threshold; POT's fastest variant whose plan is correct (finite, marginal
error <= 10 x tol, and within 1e-4 of ours) is reported. The bandwidth bound of one iteration is two
reads of the N x C kernel at the copy bandwidth measured here; our iteration time is measured without
the set-up (kernel build, final scaling) as (t(21 iterations) - t(1 iteration)) / 20.

With ``--real RUN ...`` it times real D-SINK refreshes instead: for each finished D-SINK run directory,
the refresh its last epoch would make next (the auxiliaries' stored training probabilities, the target's
final training probabilities, the run's cost, class totals, eps and solver dtype, built by
dsink.ot.surrogate_problem), solved to the run's tol by our solvers (Newton on the semi-dual, the default up to
32 classes and the base of "x ours"; Sinkhorn with adaptive over-relaxation; omega = 1: plain Sinkhorn) and by POT's sinkhorn and sinkhorn_log (numpy and torch inputs) at the
equivalent stopping threshold, given M = -log_kernel and reg = 1 (kernel exp(-M / reg) = exp(log_kernel)
exactly). Times are medians of --repeats interleaved solves; the errors are each plan's relative L1
marginal error (rows and columns).

With ``--device cuda`` the synthetic problems are solved on the GPU (ours, and POT's torch backend on the
same CUDA tensors; POT's numpy backend stays on the CPU), each time taken after a device synchronisation, the
bandwidth bound from the GPU's copy bandwidth; for C <= 32 the row also times Newton on the semi-dual.

Usage: python benchmarks/sinkhorn.py [--quick] [--sizes 50000x100 ...] [--repeats 5] [--device cpu] [--out FILE]
       python benchmarks/sinkhorn.py --real RUN [RUN ...] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from dsink.ot import sinkhorn
from dsink.ot.newton import solve

DEVICE = torch.device("cpu")  # set by main() from --device


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def copy_bandwidth(nbytes: int = 1 << 29) -> float:
    """Bytes moved per second (read + write) by a large tensor copy."""
    x = torch.empty(nbytes // 4, dtype=torch.float32, device=DEVICE).uniform_()
    y = torch.empty_like(x)
    best = math.inf
    for _ in range(5):
        _sync()
        t = time.perf_counter()
        y.copy_(x)
        _sync()
        best = min(best, time.perf_counter() - t)
    return 2 * nbytes / best


def make_problem(n, c, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = torch.empty(n, c, dtype=dtype)
    chunk = 100_000
    prior = torch.linspace(0, -math.log(100), c, dtype=dtype)
    b = torch.zeros(c, dtype=torch.float64)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        z1 = torch.randn(m, c, generator=g, dtype=dtype) * 2
        z2 = torch.randn(m, c, generator=g, dtype=dtype) * 2
        L[s : s + m] = (z1.log_softmax(1) + z2.log_softmax(1)) / 2
        b += (torch.randn(m, c, generator=g, dtype=dtype) + prior).softmax(1).sum(0).double()
    return L, torch.ones(n, dtype=dtype), (b * (n / b.sum())).to(dtype)


def rel_error(Q, a, b):
    Q = torch.as_tensor(Q).cpu().double()
    a, b = a.cpu().double(), b.cpu().double()
    return float(((Q.sum(1) - a).abs().sum() + (Q.sum(0) - b).abs().sum()) / a.sum())


def iteration_time(L, a, b, k=21):
    """Seconds per iteration, without the set-up: (t(k iterations) - t(1 iteration)) / (k - 1) at tol 0."""
    times = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for iters in (1, k):
            best = math.inf
            for _ in range(2):
                _sync()
                t = time.perf_counter()
                sinkhorn(L, a, b, tol=0.0, max_iter=iters)
                _sync()
                best = min(best, time.perf_counter() - t)
            times[iters] = best
    return (times[k] - times[1]) / (k - 1)


def run_ours(L, a, b, tol, omega=None, solver="sinkhorn"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solve(L, a, b, tol=tol, max_iter=5, omega=omega, solver=solver)  # warm-up
    _sync()
    t = time.perf_counter()
    res = solve(L, a, b, tol=tol, max_iter=10000, omega=omega, solver=solver)
    _sync()
    total = time.perf_counter() - t
    return res, total


def pot_threshold(tol, n, c):
    """POT's stopThr for our tol: POT stops on the L2 norm of the column-marginal error (absolute, checked
    every 10 iterations); this threshold bounds its relative L1 error (sum / N) by tol (L1 <= sqrt(C) L2)."""
    return tol * n / math.sqrt(c)


def pot_solve(L, a, b, thr, variant, reg=2.0, log=False):
    """One POT solve with ``variant`` = "method/backend" of the problem with log-kernel L, given to POT as
    M = -reg * L with regularisation reg (its kernel exp(-M / reg) is exp(L)): (plan, seconds, POT's log)."""
    import ot

    method, backend = variant.split("/")
    M = (-reg * L).double()
    args = (a.double(), b.double(), M) if backend == "torch" else \
        (a.double().cpu().numpy(), b.double().cpu().numpy(), M.cpu().numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _sync()
        t = time.perf_counter()
        out = ot.sinkhorn(*args, reg, method=method, stopThr=thr, numItermax=10000, log=log)
        _sync()
        dt = time.perf_counter() - t
    Q, info = out if log else (out, None)
    return torch.as_tensor(Q).cpu(), dt, info


def pot_correct(Q, a, b, tol, ours_plan):
    """A POT plan is correct when finite, within 10 x tol of the marginals and within 1e-4 of ours."""
    return bool(torch.isfinite(Q).all()) and rel_error(Q, a, b) <= 10 * tol and \
        float((Q - ours_plan.cpu().double()).abs().max()) < 1e-4


def pot_time(L, a, b, tol, variant):
    """Seconds of one POT solve with ``variant`` = "method/backend"."""
    return pot_solve(L, a, b, pot_threshold(tol, *L.shape), variant)[1]


def run_pot(L, a, b, tol, ours_plan):
    n, c = L.shape
    best = None
    thr = pot_threshold(tol, n, c)
    for backend in ("numpy", "torch"):
        for method in ("sinkhorn", "sinkhorn_log", "sinkhorn_stabilized"):
            # Slower variants are tried only where they can matter: log-domain above 1M entries only if
            # plain failed; stabilised (177 s at 10k x 100 here) only if neither plain nor log is correct.
            if method == "sinkhorn_log" and n * c > 1_000_000 and best is not None:
                continue
            if method == "sinkhorn_stabilized" and (best is not None or n * c > 1_000_000):
                continue
            try:
                Q, dt, _ = pot_solve(L, a, b, thr, f"{method}/{backend}")
            except Exception as e:  # a variant that fails is not correct
                print(f"  POT {method}/{backend} failed: {type(e).__name__}")
                continue
            ok = pot_correct(Q, a, b, tol, ours_plan)
            if ok and (best is None or dt < best[0]):
                best = (dt, f"{method}/{backend}")
    return best


POT_VARIANTS = ("sinkhorn/numpy", "sinkhorn/torch", "sinkhorn_log/numpy", "sinkhorn_log/torch")


def real_refresh(run):
    """The D-SINK refresh of a finished run: (log_kernel, a, b, eps, tol, info) from the auxiliaries'
    stored training probabilities, the target's final training probabilities and the run's params."""
    from dsink.ot import surrogate_problem
    from dsink.ot.surrogate import resolve_class_totals
    from dsink.runs import RunDir

    rd = RunDir(run)
    cfg = rd.load_config()
    if cfg.method.name != "dsink":
        raise SystemExit(f"{run}: not a D-SINK run (method {cfg.method.name!r})")
    p = cfg.method.params
    aux, _, scores = rd.read_inputs()
    pf = rd.read_predictions()["train_probs"]
    cost, totals = p.get("cost", "noise+target"), resolve_class_totals(p.get("class_totals", "soft"), scores)
    dtype = getattr(torch, p.get("solver_dtype", "float64"))
    L, a, b, eps = surrogate_problem(aux["noise"], aux["imbalance"], pf, eps=p.get("eps") or None, cost=cost,
                                     class_totals=totals, dtype=dtype)
    info = {"run": str(run), "N": L.shape[0], "C": L.shape[1], "dtype": str(dtype).replace("torch.", ""),
            "cost": cost, "class_totals": totals, "eps": eps}
    return L, a, b, eps, p.get("tol", 1e-6), info


def run_real(runs, repeats):
    """Rows (one per run and solver) timing our solver and POT's on each run's refresh."""
    rows = []
    for run in runs:
        L, a, b, eps, tol, info = real_refresh(run)
        n, c = L.shape
        thr = pot_threshold(tol, n, c)
        # ours: Newton on the semi-dual (the default at C <= 32), Sinkhorn with adaptive over-relaxation, plain
        ours = {"ours newton": ("newton", None), "ours adaptive": ("sinkhorn", None), "ours omega=1": ("sinkhorn", 1.0)}
        times = {k: [] for k in (*ours, *POT_VARIANTS)}
        last = {}
        for _ in range(max(1, repeats)):  # interleaved, medians kept
            for name, (solver, omega) in ours.items():
                res, dt = run_ours(L, a, b, tol, omega, solver)
                times[name].append(dt)
                last[name] = (res.plan, res.iterations, res.converged)
            for variant in POT_VARIANTS:
                if variant in last and last[variant] is None:
                    continue  # failed before
                try:  # reg = 1: M = -L reproduces the kernel exp(L) exactly (same plan as M = -eps L, reg = eps)
                    Q, dt, log = pot_solve(L, a, b, thr, variant, reg=1.0, log=True)
                except Exception as e:
                    print(f"  POT {variant} failed: {type(e).__name__}: {e}")
                    last[variant] = None
                    continue
                times[variant].append(dt)
                last[variant] = (Q, log["niter"] + 1, pot_correct(Q, a, b, tol, last["ours newton"][0]))
        base = float(np.median(times["ours newton"]))
        run_rows = []
        for name in times:
            if last.get(name) is None:
                run_rows.append({**info, "tol": tol, "solver": name, "iterations": None, "ok": False, "seconds": None,
                                 "error": None, "x_ours": None})
                continue
            plan, iters, ok = last[name]
            sec = float(np.median(times[name]))
            run_rows.append({**info, "tol": tol, "solver": name, "iterations": iters, "ok": ok, "seconds": sec,
                             "error": rel_error(plan, a, b), "x_ours": sec / base})
        pot_ok = [r for r in run_rows if r["solver"] in POT_VARIANTS and r["ok"]]
        best = min(pot_ok, key=lambda r: r["seconds"]) if pot_ok else None
        run_rows[0].update(pot_best=best["solver"] if best else "none correct",
                           speedup_vs_pot=best["seconds"] / base if best else None)
        for r in run_rows:
            print(json.dumps({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
        rows += run_rows
        del L
    print(f"\n{'run':<28}{'N':>8}{'C':>6}{'dtype':>9}{'eps':>5}  {'solver':<20}{'iters':>7}{'seconds':>10}"
          f"{'error':>10}{'ok':>4}{'x ours':>8}")
    for r in rows:
        name = r["run"] if len(r["run"]) <= 27 else "..." + r["run"][-24:]
        sec = f"{r['seconds']:.4f}" if r["seconds"] is not None else "-"
        err = f"{r['error']:.2e}" if r["error"] is not None else "-"
        x = f"{r['x_ours']:.2f}" if r["x_ours"] is not None else "-"
        print(f"{name:<28}{r['N']:>8}{r['C']:>6}{r['dtype']:>9}{r['eps']:>5g}  {r['solver']:<20}"
              f"{r['iterations'] or '-':>7}"
              f"{sec:>10}{err:>10}{'y' if r['ok'] else 'n':>4}{x:>8}")
    for r in rows:
        if "speedup_vs_pot" in r:
            sp = f"{r['speedup_vs_pot']:.1f}x" if r["speedup_vs_pot"] else "-"
            print(f"{r['run']}: ours (newton) vs fastest correct POT ({r['pot_best']}): {sp}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip N = 1M")
    ap.add_argument("--sizes", nargs="+", metavar="NxC", help="only these sizes, e.g. 50000x100")
    ap.add_argument("--real", nargs="+", metavar="RUN", help="time the refreshes of these finished D-SINK runs instead")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved timings of ours and POT (medians kept)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N: where the synthetic problems are solved")
    ap.add_argument("--out", help="JSON results (default benchmarks/results/sinkhorn.json, with --real "
                                  "benchmarks/results/sinkhorn_real.json)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    results = Path(__file__).parent / "results"
    if args.real:
        rows = run_real(args.real, args.repeats)
        meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
                "command": "python benchmarks/sinkhorn.py " + " ".join(sys.argv[1:])}
        Path(args.out or results / "sinkhorn_real.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        return
    args.out = args.out or str(results / "sinkhorn.json")
    bw = copy_bandwidth()
    rows = []
    sizes = [(n, c) for n in (10_000, 50_000, 1_000_000) for c in (10, 100, 1000)]
    if args.quick:
        sizes = [s for s in sizes if s[0] < 1_000_000]
    if args.sizes:
        sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    for n, c in sizes:
        big = n * c > 60_000_000
        for dtype, tol in ((torch.float64, 1e-6), (torch.float32, max(1e-5, 2e-7 * math.sqrt(n)))):
            if big and dtype == torch.float64:
                continue  # 1M x 100 and more: float32 only (memory)
            L, a, b = (t.to(DEVICE) for t in make_problem(n, c, dtype))
            res, total = run_ours(L, a, b, tol)
            per_iter = iteration_time(L, a, b)
            bound = 2 * n * c * L.element_size() / bw  # two reads of the kernel per iteration
            row = {"N": n, "C": c, "dtype": str(dtype).replace("torch.", ""), "tol": tol, "iterations": res.iterations,
                   "converged": res.converged, "ours_s": total, "ours_iter_ms": 1e3 * per_iter,
                   "bound_iter_ms": 1e3 * bound, "x_bound": per_iter / bound, "device": str(DEVICE)}
            if c <= 32:
                res_n, row["newton_s"] = run_ours(L, a, b, tol, solver="newton")
                row["newton_converged"] = res_n.converged
            if dtype == torch.float64 and not big:
                pot = run_pot(L, a, b, tol, res.plan)
                if pot and args.repeats > 1:  # interleave further timings of both; keep the medians
                    ours_t, pot_t = [total], [pot[0]]
                    for _ in range(args.repeats - 1):
                        ours_t.append(run_ours(L, a, b, tol)[1])
                        pot_t.append(pot_time(L, a, b, tol, pot[1]))
                    total, pot = float(np.median(ours_t)), (float(np.median(pot_t)), pot[1])
                    row["ours_s"] = total
                row.update(pot_s=pot[0] if pot else None, pot_variant=pot[1] if pot else "none correct",
                           speedup_vs_pot=(pot[0] / total) if pot else None)
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
            del L, res
    print(f"\ncopy bandwidth {bw / 1e9:.1f} GB/s")
    print(f"{'N':>8}{'C':>6}{'dtype':>9}{'iters':>7}{'ours s':>9}{'newton s':>9}{'POT s':>9}{'POT variant':>26}{'x POT':>7}"
          f"{'x bound':>9}")
    for r in rows:
        pot_s = f"{r['pot_s']:.3f}" if r.get("pot_s") else "-"
        sp = f"{r['speedup_vs_pot']:.1f}" if r.get("speedup_vs_pot") else "-"
        newton_s = f"{r['newton_s']:.3f}" if r.get("newton_s") is not None else "-"
        print(f"{r['N']:>8}{r['C']:>6}{r['dtype']:>9}{r['iterations']:>7}{r['ours_s']:>9.3f}{newton_s:>9}{pot_s:>9}"
              f"{r.get('pot_variant', '-'):>26}{sp:>7}{r['x_bound']:>9.2f}")
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "copy_bandwidth_GBps": bw / 1e9,
            "device": str(DEVICE), "gpu": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else None,
            "machine": platform.machine(), "command": "python benchmarks/sinkhorn.py " + " ".join(sys.argv[1:])}
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
