"""The fast solver (blocks, absorption, over-relaxation, warm start) against the plain reference solver."""

from functools import lru_cache
import math
from pathlib import Path
import warnings

import numpy as np
import ot
import pytest
import torch

from dsink import SolverWarning, surrogate_labels
from dsink.ot import sinkhorn, sinkhorn_reference

F64 = torch.float64


def _marginal(x: torch.Tensor, mass: float) -> torch.Tensor:
    return x / x.sum() * mass


def _random():
    g = torch.Generator().manual_seed(0)
    L = torch.randn(500, 8, generator=g, dtype=F64) * 2
    return L, torch.ones(500, dtype=F64), _marginal(torch.rand(8, generator=g, dtype=F64), 500)


def _skewed():
    """Both marginals far from uniform: row masses over 4 decades, class masses over 4 decades."""
    g = torch.Generator().manual_seed(1)
    L = torch.randn(600, 9, generator=g, dtype=F64) * 2
    a = _marginal(torch.rand(600, generator=g, dtype=F64) ** 4 + 1e-4, 600)
    return L, a, _marginal(torch.tensor(np.geomspace(1, 1e4, 9)), 600)


def _near_zero():
    """Every kernel entry below 1e-200 (plain exp-domain scaling underflows), exact zeros (-inf), and rows and
    a class without mass."""
    g = torch.Generator().manual_seed(2)
    L = torch.randn(400, 6, generator=g, dtype=F64) * 30 - 500
    L[:, 2] = -math.inf
    L[:50, 4] = -math.inf
    a = torch.ones(400, dtype=F64)
    a[::9] = 0
    b = torch.rand(6, generator=g, dtype=F64)
    b[2] = 0
    return L, a, _marginal(b, float(a.sum()))


def _small_eps():
    """Sharp kernel (eps = 0.05 on a unit-scale cost): the scalings leave [1e-30, 1e30] and are absorbed."""
    g = torch.Generator().manual_seed(3)
    L = torch.randn(300, 7, generator=g, dtype=F64) / 0.05
    return L, torch.ones(300, dtype=F64), _marginal(torch.tensor(np.geomspace(1, 30, 7)), 300)


def _hard_refresh():
    """tests/ot/hard_refresh.npz (a real D-SINK refresh, see test_sinkhorn.py) as a log-kernel, eps = 2."""
    z = np.load(Path(__file__).parent / "hard_refresh.npz")
    pn, pf = (z[k].astype(np.float64) for k in ("p_noise", "p_target"))
    pn, pf = pn / pn.sum(1, keepdims=True), pf / pf.sum(1, keepdims=True)
    L = torch.tensor((np.log(pn) + np.log(pf)) / 2.0)
    return L, torch.ones(len(L), dtype=F64), _marginal(torch.tensor(z["class_totals"].astype(np.float64)), len(L))


PROBLEMS = {"random": _random, "skewed": _skewed, "near_zero": _near_zero, "small_eps": _small_eps,
            "hard_refresh": _hard_refresh}


@lru_cache(maxsize=None)
def _reference(name: str) -> torch.Tensor:
    return sinkhorn_reference(*PROBLEMS[name]())


def assert_same_plan(q, ref, rtol=1e-6):
    """Entrywise relative agreement (zeros must be zeros in both, up to float64 underflow)."""
    q = torch.as_tensor(q, dtype=F64)
    assert q.shape == ref.shape
    diff = (q - ref).abs()
    bad = diff > rtol * ref.abs() + 1e-300
    assert not bool(bad.any()), f"{int(bad.sum())} entries differ, worst by {float((diff / ref.abs())[bad].max()):.3g}"


@pytest.mark.parametrize("omega", [None, 1.0, 1.8])
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_fast_solver_agrees_with_the_reference(name, omega):
    L, a, b = PROBLEMS[name]()
    res = sinkhorn(L, a, b, tol=1e-12, max_iter=50_000, omega=omega)
    assert res.converged
    assert_same_plan(res.plan, _reference(name))


def test_warm_start_and_block_passes_agree_with_the_reference():
    L, a, b = _skewed()
    L, a, b = L.repeat(100, 1), a.repeat(100), b * 100  # 60,000 rows: several row blocks per pass
    cold = sinkhorn(L, a, b, tol=1e-12, max_iter=50_000)
    warm = sinkhorn(L * 1.01, a, b, tol=1e-12, max_iter=50_000, init_log_v=cold.log_v)
    assert cold.converged and warm.converged
    assert_same_plan(cold.plan, sinkhorn_reference(L, a, b))
    assert_same_plan(warm.plan, sinkhorn_reference(L * 1.01, a, b))


def test_surrogate_labels_on_the_hard_refresh_agree_with_the_reference():
    z = np.load(Path(__file__).parent / "hard_refresh.npz")
    pn, pf = (z[k].astype(np.float64) for k in ("p_noise", "p_target"))
    pn, pf = pn / pn.sum(1, keepdims=True), pf / pf.sum(1, keepdims=True)
    q = surrogate_labels(pn, pn, pf, class_totals=z["class_totals"], tol=1e-12, max_iter=50_000)
    assert_same_plan(q, _reference("hard_refresh"))


def test_reference_agrees_with_pot_and_warns_at_the_cap():
    L, a, b = _random()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pot = ot.sinkhorn(a.numpy(), b.numpy(), -L.numpy(), 1.0, method="sinkhorn_log", stopThr=1e-12,
                          numItermax=20_000)
    assert_same_plan(pot, _reference("random"), rtol=1e-8)
    with pytest.warns(SolverWarning, match="did not reach tol"):
        sinkhorn_reference(*_hard_refresh(), max_iter=3)
