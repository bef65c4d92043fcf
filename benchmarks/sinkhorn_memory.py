"""Peak memory of one D-SINK-sized solve at N = 1,000,000, C = 1,000 (float32).

The log-kernel (input, 4 GB) and the solver's one work buffer (which becomes the plan, 4 GB) are the
only N x C arrays; the script prints the peak resident memory of the process against that 8 GB.
Usage: python benchmarks/sinkhorn_memory.py [--n 1000000] [--c 1000]
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from sinkhorn import make_problem  # noqa: E402

from dsink.ot import sinkhorn  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=1_000_000)
ap.add_argument("--c", type=int, default=1000)
args = ap.parse_args()
L, a, b = make_problem(args.n, args.c, torch.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
t = time.perf_counter()
res = sinkhorn(L, a, b)
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
nxc = args.n * args.c * 4 / 1e9
out = {"N": args.n, "C": args.c, "seconds": dt, "iterations": res.iterations, "converged": res.converged,
       "marginal_error": res.marginal_error, "NxC_GB": nxc, "peak_rss_GB_before_solve": before, "peak_rss_GB": peak}
print(json.dumps(out))
Path(__file__).with_name("results").joinpath("sinkhorn_memory.json").write_text(json.dumps(out, indent=2))
