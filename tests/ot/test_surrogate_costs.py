"""surrogate_labels' costs and class-total sources, checked against the plain reference solver."""

import numpy as np
import pytest
import torch

from dsink import surrogate_labels
from dsink.errors import InputError
from dsink.ot import sinkhorn_reference, surrogate_problem
from dsink.ot.newton import solve


def _probs(rng, n, c, sharp=3.0):
    z = rng.normal(size=(n, c)) * sharp
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def _reference(log_kernel, totals):
    n = log_kernel.shape[0]
    plan = sinkhorn_reference(torch.as_tensor(log_kernel), torch.ones(n, dtype=torch.float64),
                              torch.as_tensor(totals * (n / totals.sum())))
    return np.asarray(plan)


@pytest.fixture
def probs():
    rng = np.random.default_rng(3)
    return _probs(rng, 400, 5), _probs(rng, 400, 5), _probs(rng, 400, 5)


def test_noise_totals_are_f_N_counts(probs):
    pn, pl, pf = probs
    q = surrogate_labels(pn, pl, pf, class_totals="noise_argmax", tol=1e-10)
    counts = np.bincount(pn.argmax(1), minlength=5)
    np.testing.assert_allclose(q.sum(0), counts, rtol=1e-6)
    q = surrogate_labels(pn, pl, pf, class_totals="noise_soft", tol=1e-10)
    np.testing.assert_allclose(q.sum(0), pn.sum(0), rtol=1e-6)


def test_noise_alone_with_its_own_totals_is_f_N(probs):
    """cost=noise and totals = f_N's own sums: f_N already satisfies both marginals, so Q = f_N (eps 1)."""
    pn, pl, _ = probs
    q = surrogate_labels(pn, pl, None, cost="noise", class_totals="noise_soft", tol=1e-12, max_iter=5000)
    np.testing.assert_allclose(q, pn, atol=1e-8)


@pytest.mark.parametrize("cost", ["noise+target", "noise", "noise+imbalance+target", "noise+imbalance"])
def test_costs_match_reference(probs, cost):
    """Each cost's kernel, written out here from its definition, solved by the reference solver."""
    pn, pl, pf = probs
    totals = np.bincount(pn.argmax(1), minlength=5).astype(float)
    q = surrogate_labels(pn, pl, pf, cost=cost, class_totals=totals, tol=1e-12, max_iter=10000)
    logs = [np.log(pn)]
    if "imbalance" in cost:
        shifted = np.log(pl) + np.log(totals / totals.sum())
        logs.append(shifted - np.log(np.exp(shifted).sum(1, keepdims=True)))
    if cost.endswith("target"):
        logs.append(np.log(pf))
    expected = _reference(sum(logs) / len(logs), totals)  # eps = number of models in the cost
    np.testing.assert_allclose(q, expected, atol=1e-7)


def test_average_cost_transports_the_arithmetic_mean(probs):
    """cost=average+target: kernel ((p_N + f_L at the prior) / 2 * p_f)^(1/2), solved by the reference solver."""
    pn, pl, pf = probs
    totals = np.bincount(pn.argmax(1), minlength=5).astype(float)
    q = surrogate_labels(pn, pl, pf, cost="average+target", class_totals=totals, tol=1e-12, max_iter=10000)
    shifted = np.exp(np.log(pl) + np.log(totals / totals.sum()))
    avg = 0.5 * (pn + shifted / shifted.sum(1, keepdims=True))
    np.testing.assert_allclose(q, _reference((np.log(avg) + np.log(pf)) / 2, totals), atol=1e-7)
    assert surrogate_problem(pn, pl, pf, cost="average+target", class_totals=totals)[3] == 2.0  # one unit per term
    assert not np.allclose(q, surrogate_labels(pn, pl, pf, cost="noise+imbalance+target", class_totals=totals))


def test_explicit_eps_and_unknown_cost(probs):
    pn, pl, pf = probs
    q2 = surrogate_labels(pn, pl, pf, eps=2.0, tol=1e-12, max_iter=5000)
    qd = surrogate_labels(pn, pl, pf, tol=1e-12, max_iter=5000)  # the paper: two models, eps 2
    np.testing.assert_allclose(q2, qd, atol=1e-12)
    with pytest.raises(InputError, match="unknown cost 'imbalance'; valid: noise\\+target"):
        surrogate_labels(pn, pl, pf, cost="imbalance")
    with pytest.raises(InputError, match="unknown class_totals"):
        surrogate_labels(pn, pl, pf, class_totals="noise_median")


@pytest.mark.parametrize("cost,totals,eps", [("noise+target", "soft", None),
                                              ("noise+imbalance+target", "noise_argmax", 1.5)])
def test_problem_then_solver_is_surrogate_labels(probs, cost, totals, eps):
    """surrogate_problem + the solver is surrogate_labels, bit for bit (the benchmark times this split)."""
    pn, pl, pf = probs
    q, res = surrogate_labels(pn, pl, pf, cost=cost, class_totals=totals, eps=eps, return_result=True)
    L, a, b, e = surrogate_problem(pn, pl, pf, cost=cost, class_totals=totals, eps=eps)
    assert e == (eps or float(cost.count("+") + 1)) and L.dtype == torch.float64 and L.shape == (400, 5)
    assert torch.equal(a, torch.ones(400, dtype=torch.float64)) and float(b.sum()) == pytest.approx(400)
    r = solve(L, a, b, eps=e)  # auto: Newton at 5 classes
    assert np.array_equal(r.plan.numpy(), q) and r.iterations == res.iterations
    assert torch.equal(r.log_v, res.log_v)
