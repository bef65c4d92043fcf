"""The operations the third 2026-12-07 session changed in D-SINK's epoch, each timed in its old and new form.

``benchmarks/dsink_cost.py`` times whole epochs; this times the parts on their own, on the CPU with one thread, at
the offline default's sizes (13,403 training rows, 10 classes, batches of 128): the soft cross-entropy's forward
and backward (a custom one-node autograd function against torch's ``cross_entropy`` with probability targets),
the objective term of a Newton pass (a masked sum against a plain one when every row has mass), f's log for the
kernel (float64 against float32 then widened), the logged disagreement (argmax against the label's entry and the
row maximum) and the training pass's bookkeeping over one epoch (a copy and a fill per step against keeping the
steps' tensors and writing once). Median of ``--repeats`` rounds, the forms interleaved in each round.

Usage: python benchmarks/dsink_cost_parts.py [--repeats 30] [--out benchmarks/results/dsink_cost_parts.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

N, C, B = 13_403, 10, 128


class OneNodeSoftCE(torch.autograd.Function):
    """The previous form: ``-(t * log_softmax(z + shift)).sum(1).mean()`` as one custom autograd node."""

    @staticmethod
    def forward(ctx, z, t, shift):
        log_p = torch.log_softmax(z + shift, 1)
        ctx.save_for_backward(t, log_p)
        return -(t * log_p).sum(1).mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        t, log_p = ctx.saved_tensors
        return torch._log_softmax_backward_data((-(g / t.shape[0])) * t, log_p, 1, log_p.dtype), None, None


def timed(fn, inner: int) -> float:
    """Microseconds per call of ``fn``, averaged over ``inner`` calls."""
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner * 1e6


def cases(gen: torch.Generator) -> dict[str, tuple[dict, int]]:
    """name -> ({form: callable}, calls per timing)."""
    out = {}
    for b, c in ((B, C), (B, 100), (512, C)):
        w = torch.randn(256, c, generator=gen, requires_grad=True)
        h = torch.randn(b, 256, generator=gen)
        t = torch.rand(b, c, generator=gen)
        t /= t.sum(1, keepdim=True)
        shift = torch.randn(c, generator=gen)

        def step(loss, w=w):
            w.grad = None
            loss().backward()

        out[f"soft CE forward+backward, B={b}, C={c}"] = ({
            "old: one-node autograd function": lambda h=h, w=w, t=t, s=shift: step(lambda: OneNodeSoftCE.apply(h @ w, t, s)),
            "new: F.cross_entropy(z + shift, t)": lambda h=h, w=w, t=t, s=shift: step(lambda: F.cross_entropy(h @ w + s, t)),
        }, 100)
    a = torch.ones(N, dtype=torch.float64)
    lse = torch.randn(N, dtype=torch.float64, generator=gen)
    pos = a > 0
    out["Newton pass objective term"] = ({
        "old: masked sum every pass": lambda: -(a[pos].double() * lse[pos].double()).sum(),
        "new: plain sum (mask found once per solve)": lambda: -(a.double() * lse.double()).sum(),
    }, 200)
    pf = torch.rand(N, C, generator=gen)
    out["f's log for the kernel"] = ({
        "old: float64 log": lambda: pf.to(torch.float64).log(),
        "new: float32 log, widened": lambda: pf.log().to(torch.float64),
    }, 100)
    q, y = torch.rand(N, C, generator=gen), torch.randint(0, C, (N,), generator=gen)
    out["q_disagree"] = ({
        "old: argmax != label": lambda: float((q.argmax(1) != y).float().mean()),
        "new: label's entry < row maximum": lambda: float((q.gather(1, y[:, None]).squeeze(1) < q.amax(1)).float().mean()),
    }, 100)
    perm = torch.randperm(N, generator=gen)
    batches = [(perm[i:i + B], torch.randn(len(perm[i:i + B]), C, generator=gen)) for i in range(0, N, B)]
    train_pass, seen = torch.zeros(N, C), torch.zeros(N, dtype=torch.bool)

    def per_step():
        for idx, z in batches:
            train_pass.index_copy_(0, idx, z)
            seen.index_fill_(0, idx, True)

    def once():
        kept = []
        for idx, z in batches:
            kept.append((idx, z))
        rows = torch.cat([r for r, _ in kept])
        seen.index_fill_(0, rows, True)
        if int(seen.sum()) == len(rows):
            train_pass.index_copy_(0, rows, torch.cat([z for _, z in kept]))

    out[f"training-pass bookkeeping, one epoch ({len(batches)} steps)"] = ({
        "old: copy and fill per step": per_step, "new: kept per step, written once": once}, 10)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dsink_cost_parts.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    table = cases(gen)
    results = {}
    for name, (forms, inner) in table.items():
        for fn in forms.values():
            fn()  # warm-up
        times = {form: [] for form in forms}
        for _ in range(args.repeats):
            for form, fn in forms.items():
                times[form].append(timed(fn, inner))
        results[name] = {form: statistics.median(v) for form, v in times.items()}
    print(f"{'operation':58s} {'form':44s} {'us':>10s}")
    for name, forms in results.items():
        for form, us in forms.items():
            print(f"{name:58s} {form:44s} {us:10.1f}")
    meta = {"command": "python benchmarks/dsink_cost_parts.py" + (f" --repeats {args.repeats}" if args.repeats != 30 else ""),
            "machine": platform.machine(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": 1, "unit": "microseconds per call (median over repeats)"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
