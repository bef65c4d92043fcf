"""Newton's method on the semi-dual solves the same problem as Sinkhorn (dsink.ot.newton)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dsink import SolverWarning, surrogate_labels
from dsink.errors import InputError
from dsink.methods.dsink import DSinkParams
from dsink.ot import semidual_newton, sinkhorn, sinkhorn_reference, surrogate_problem
from dsink.ot import newton as newton_mod
from dsink.ot.newton import NEWTON_MAX_CLASSES, solve


def _problem(n, c, seed, sharp, skew):
    g = torch.Generator().manual_seed(seed)
    L = torch.log_softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * sharp, 1)
    b = torch.tensor([skew ** (-j / max(c - 1, 1)) for j in range(c)], dtype=torch.float64)
    return L, torch.ones(n, dtype=torch.float64), b * (n / b.sum())


@pytest.mark.parametrize("n,c,seed,sharp,skew", [(300, 5, 0, 1.0, 1.0), (2000, 10, 1, 6.0, 100.0),
                                                  (1500, 3, 2, 3.0, 10.0), (800, 20, 3, 8.0, 300.0)])
def test_same_plan_as_the_reference_to_tolerance(n, c, seed, sharp, skew):
    L, a, b = _problem(n, c, seed, sharp, skew)
    ref = sinkhorn_reference(L, a, b, tol=1e-13)
    r = semidual_newton(L, a, b, tol=1e-11)
    assert r.converged and r.marginal_error <= 1e-11
    assert r.iterations <= 15, r.iterations  # a handful of passes (Sinkhorn needs tens to hundreds)
    assert torch.allclose(r.plan.sum(1), a, atol=1e-12)  # rows exact
    assert float((r.plan.sum(0) - b).abs().sum()) / n <= 1e-11
    assert float((r.plan - ref).abs().max()) < 1e-8
    # the potentials reproduce the plan, in Sinkhorn's convention
    assert torch.allclose(torch.exp(r.log_u[:, None] + L + r.log_v), r.plan, atol=1e-12)


def test_the_real_refresh_in_few_passes_and_closer_to_the_solution_than_sinkhorn():
    """1,000 rows of a real D-SINK refresh (hard for Sinkhorn: sharp probabilities, totals far from the kernel's
    column sums)."""
    z = np.load(Path(__file__).parent / "hard_refresh.npz")
    pn, pf = (torch.tensor(z[k], dtype=torch.float64) for k in ("p_noise", "p_target"))
    pn, pf = pn / pn.sum(1, keepdim=True), pf / pf.sum(1, keepdim=True)
    L, a, b, _ = surrogate_problem(pn, pn, pf, class_totals=torch.tensor(z["class_totals"]), cost="noise+target")
    exact = semidual_newton(L, a, b, tol=1e-13).plan
    s, n = sinkhorn(L, a, b), semidual_newton(L, a, b)
    assert s.converged and n.converged and n.iterations < s.iterations / 10, (n.iterations, s.iterations)
    assert float((n.plan - exact).abs().max()) <= float((s.plan - exact).abs().max())
    assert float((exact - sinkhorn_reference(L, a, b, tol=1e-12)).abs().max()) < 1e-7


def test_zero_mass_rows_and_columns_and_forbidden_entries():
    L, a, b = _problem(400, 6, 4, 2.0, 20.0)
    L[::7, 2] = -math.inf  # forbidden pairs
    L[5] = -math.inf  # a row with an all-zero kernel, but no mass
    a[5] = 0.0
    a[10:20] = 0.0
    b[4] = 0.0  # a class without mass
    b *= float(a.sum()) / float(b.sum())
    ref = sinkhorn_reference(L, a, b, tol=1e-13)
    r = semidual_newton(L, a, b, tol=1e-11)
    assert r.converged and float((r.plan - ref).abs().max()) < 1e-8
    assert float(r.plan[:, 4].abs().max()) == 0.0 and float(r.plan[10:20].abs().max()) == 0.0
    assert float(r.plan[::7, 2].abs().max()) == 0.0 and torch.isfinite(r.plan).all()


def test_float32_input_is_solved_in_float64_and_returned_in_float32():
    L, a, b = _problem(3000, 10, 5, 6.0, 100.0)
    exact = semidual_newton(L, a, b, tol=1e-13).plan
    r = semidual_newton(L.float(), a.float(), b.float())
    assert r.plan.dtype == torch.float32 and r.converged and r.marginal_error <= 1e-6
    assert float((r.plan.double() - exact).abs().max()) < 1e-5  # float32 Sinkhorn: ~1e-3 here


def test_warm_start_stops_at_once_on_the_same_problem():
    L, a, b = _problem(2000, 10, 6, 5.0, 50.0)
    r0 = semidual_newton(L, a, b, tol=1e-10)
    again = semidual_newton(L, a, b, tol=1e-10, init_log_v=r0.log_v)
    assert again.iterations == 1 and torch.allclose(again.plan, r0.plan, atol=1e-9)
    with pytest.raises(ValueError, match="init_log_v must hold 10 column potentials"):
        semidual_newton(L, a, b, init_log_v=torch.zeros(3))


def test_hand_off_to_sinkhorn_gives_the_same_plan(monkeypatch):
    L, a, b = _problem(1000, 8, 7, 4.0, 30.0)
    ref = semidual_newton(L, a, b, tol=1e-10).plan
    monkeypatch.setattr(newton_mod, "_NEWTON_CAP", 1)  # one Newton step, then Sinkhorn from its potentials
    r = semidual_newton(L, a, b, tol=1e-10, max_iter=5000)
    assert r.converged and r.iterations > 3 and float((r.plan - ref).abs().max()) < 1e-7
    monkeypatch.setattr(newton_mod, "_NEWTON_CAP", 50)
    with pytest.warns(SolverWarning, match="raise max_iter"):  # the cap holds across the hand-off
        r = semidual_newton(L, a, b, tol=1e-14, max_iter=2)
    assert not r.converged


def test_bad_problems_raise_like_sinkhorn():
    with pytest.raises(ValueError, match="NaN"):
        semidual_newton(torch.full((2, 2), math.nan), torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match="infeasible"):
        semidual_newton(torch.tensor([[0.0, -math.inf], [0.0, -math.inf]]), torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match="infeasible"):
        semidual_newton(torch.tensor([[-math.inf, 0.0], [-math.inf, -math.inf]]), torch.tensor([1.0, 0.0]),
                        torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="different masses"):
        semidual_newton(torch.zeros(3, 2), torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match="unknown solver 'fast'"):
        solve(torch.zeros(3, 2), torch.ones(3), torch.full((2,), 1.5), solver="fast")
    with pytest.raises(ValueError, match="omega must be in"):  # checked whichever solver runs
        solve(torch.zeros(3, 2), torch.ones(3), torch.full((2,), 1.5), omega=3.0)


def test_auto_picks_newton_for_few_classes_and_sinkhorn_beyond():
    for c, expect_few in ((NEWTON_MAX_CLASSES, True), (NEWTON_MAX_CLASSES + 8, False)):
        L, a, b = _problem(600, c, 8, 3.0, 10.0)
        r = solve(L, a, b, tol=1e-9)
        s = sinkhorn(L, a, b, tol=1e-9)
        assert (r.iterations < s.iterations) == expect_few and r.converged
        assert (r.iterations == s.iterations) == (not expect_few)
        assert float((r.plan - s.plan).abs().max()) < 1e-6


def test_surrogate_labels_and_dsink_check_the_solver_name():
    rng = np.random.default_rng(0)
    pn, pl = rng.dirichlet(np.ones(4), 50), rng.dirichlet(np.ones(4), 50)
    q_n = surrogate_labels(pn, pl, solver="newton", tol=1e-10)
    q_s = surrogate_labels(pn, pl, solver="sinkhorn", tol=1e-10)
    assert np.abs(q_n - q_s).max() < 1e-8
    with pytest.raises(InputError, match="unknown solver 'lbfgs'; valid: auto, newton, sinkhorn"):
        surrogate_labels(pn, pl, solver="lbfgs")
    assert DSinkParams().solver == "auto"  # D-SINK's default (docs/research/rounds.md, seventh round)
