import math
from pathlib import Path
import warnings

import numpy as np
import ot
import pytest
import torch

from dsink import SolverWarning, surrogate_labels
from dsink.errors import InputError
from dsink.ot import sinkhorn


def problem(n=300, c=7, seed=0, conc=0.5):
    rng = np.random.default_rng(seed)
    return (rng.dirichlet(np.ones(c) * conc, n), rng.dirichlet(np.ones(c), n), rng.dirichlet(np.ones(c) * conc, n))


def objective(q, pn, pf):
    """Sum_i KL(q_i || pN_i) + KL(q_i || pf_i) (docs/dsink.md)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(q > 0, q * (2 * np.log(q) - np.log(pn) - np.log(pf)), 0.0)
    return t.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_marginals(seed, dtype):
    pn, pl, pf = (p.astype(dtype) for p in problem(seed=seed))
    q, res = surrogate_labels(pn, pl, pf, tol=1e-6, return_result=True)
    assert isinstance(q, np.ndarray) and q.dtype == dtype and q.shape == pn.shape
    assert res.converged and res.marginal_error <= 1e-6
    assert np.abs(q.sum(1) - 1).max() < (1e-10 if dtype == np.float64 else 1e-5)
    assert np.abs(q.sum(0) - pl.sum(0)).sum() / len(q) < 1e-5


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_pot_log_domain(seed):
    pn, pl, pf = problem(n=200, c=5, seed=10 + seed)
    q = surrogate_labels(pn, pl, pf, tol=1e-11, max_iter=5000)
    M = -np.log(pn) - np.log(pf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ot.sinkhorn(np.ones(len(pn)), pl.sum(0), M, 2.0, method="sinkhorn_log", stopThr=1e-13, numItermax=20000)
    assert np.abs(q - ref).max() < 1e-7


def test_other_eps_agrees_with_pot():
    pn, pl, pf = problem(n=150, c=4, seed=3)
    for eps in (0.5, 5.0):
        q = surrogate_labels(pn, pl, pf, eps=eps, tol=1e-11, max_iter=20000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = ot.sinkhorn(np.ones(len(pn)), pl.sum(0), -np.log(pn) - np.log(pf), eps, method="sinkhorn_log",
                              stopThr=1e-13, numItermax=50000)
        assert np.abs(q - ref).max() < 1e-6


def test_closed_form_geometric_mean_times_class_factor():
    pn, pl, pf = problem(seed=4)
    q = surrogate_labels(pn, pl, pf, tol=1e-12, max_iter=5000)
    g = np.sqrt(pn * pf)
    g /= g.sum(1, keepdims=True)
    ratio = q / g  # = w_c / (sum_c' g_ic' w_c'): per-row scale times a per-class factor
    w = ratio / ratio[:, :1]
    assert np.allclose(w, w[0], rtol=1e-8)
    qq = g * w[0]
    assert np.allclose(qq / qq.sum(1, keepdims=True), q, atol=1e-10)


def test_uniform_target_gives_the_noise_model_reweighted():
    pn, pl, _ = problem(seed=5)
    q = surrogate_labels(pn, pl, None, tol=1e-12, max_iter=5000)
    w = (q / np.sqrt(pn)) / (q / np.sqrt(pn))[:, :1]
    assert np.allclose(w, w[0], rtol=1e-7)


def test_random_feasible_perturbations_never_lower_the_objective():
    pn, pl, pf = problem(n=60, c=5, seed=6)
    q = surrogate_labels(pn, pl, pf, tol=1e-13, max_iter=10000)
    base = objective(q, pn, pf)
    rng = np.random.default_rng(0)
    for _ in range(300):
        i, j = rng.choice(len(q), 2, replace=False)
        c, d = rng.choice(q.shape[1], 2, replace=False)
        delta = rng.uniform(0.05, 1.0) * min(q[i, d], q[j, c])  # keeps Q >= 0; row and column sums unchanged
        p = q.copy()
        p[i, c] += delta
        p[j, d] += delta
        p[i, d] -= delta
        p[j, c] -= delta
        assert objective(p, pn, pf) >= base - 1e-10


def test_zeros_in_inputs_stay_finite_and_get_no_mass():
    pn, pl, pf = problem(seed=7)
    pn[:, 2] = 0
    pn[:50, 4] = 0
    pn /= pn.sum(1, keepdims=True)
    pl[:, 2] = 0  # class 2 gets no total either, else infeasible
    pl /= pl.sum(1, keepdims=True)
    q = surrogate_labels(pn, pl, pf)
    assert np.isfinite(q).all() and (q[:, 2] == 0).all() and (q[:50, 4] == 0).all()
    assert np.allclose(q.sum(1), 1) and np.allclose(q.sum(0), pl.sum(0), rtol=1e-4, atol=1e-3)


def test_small_eps_is_finite_and_feasible():
    pn, pl, pf = problem(n=400, c=10, seed=8, conc=0.2)
    for dtype in (np.float32, np.float64):
        q, res = surrogate_labels(pn.astype(dtype), pl.astype(dtype), pf.astype(dtype), eps=0.05, tol=1e-5,
                                  max_iter=20000, return_result=True)
        assert np.isfinite(q).all() and res.converged
        assert np.abs(q.sum(0) - pl.sum(0)).sum() / len(q) < 1e-4


def test_small_eps_agrees_with_pot_where_plain_scaling_underflows():
    pn, pl, pf = problem(n=100, c=6, seed=12, conc=0.3)
    q = surrogate_labels(pn, pl, pf, eps=0.05, tol=1e-10, max_iter=100000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ot.sinkhorn(np.ones(100), pl.sum(0), -np.log(pn) - np.log(pf), 0.05, method="sinkhorn_log",
                          stopThr=1e-12, numItermax=200000)
    assert np.abs(q - ref).max() < 1e-5


def test_float16_and_torch_inputs():
    pn, pl, pf = (torch.tensor(p, dtype=torch.float16) for p in problem(seed=9))
    pn, pl, pf = (p / p.sum(1, keepdim=True) for p in (pn, pl, pf))
    q = surrogate_labels(pn, pl, pf)
    assert torch.is_tensor(q) and q.dtype == torch.float32 and torch.isfinite(q).all()
    assert torch.allclose(q.sum(1), torch.ones(len(q)), atol=1e-4)
    q64 = surrogate_labels(*(torch.tensor(p) for p in problem(seed=9)))
    assert q64.dtype == torch.float64


def test_argmax_and_given_class_totals():
    pn, pl, pf = problem(seed=11)
    q = surrogate_labels(pn, pl, pf, class_totals="argmax")
    assert np.allclose(q.sum(0), np.bincount(pl.argmax(1), minlength=7), atol=1e-3)
    t = np.arange(1, 8, dtype=float)
    q = surrogate_labels(pn, pl, pf, class_totals=t)
    assert np.allclose(q.sum(0), t / t.sum() * len(q), atol=1e-3)


@pytest.mark.parametrize("mutate,needle", [
    (lambda a: a.__setitem__((0, 0), np.nan), "NaN or Inf"),
    (lambda a: a.__setitem__((0, slice(None)), [-0.2, 0.6, 0.2, 0.1, 0.1, 0.1, 0.1]), "negative"),
    (lambda a: a.__imul__(2.0), "sum to 1"),
])
def test_bad_probabilities_are_input_errors(mutate, needle):
    pn, pl, pf = problem()
    mutate(pf)
    with pytest.raises(InputError, match=needle):
        surrogate_labels(pn, pl, pf)
    assert issubclass(InputError, ValueError)


def test_shape_and_mass_errors():
    pn, pl, pf = problem()
    with pytest.raises(InputError, match="same samples"):
        surrogate_labels(pn, pl[:-1], pf)
    with pytest.raises(InputError, match=r"shape \(N, C\)"):
        surrogate_labels(pn[0], pl, pf)
    with pytest.raises(ValueError, match="different masses"):
        sinkhorn(torch.zeros(4, 3), torch.ones(4), torch.ones(3))
    with pytest.raises(ValueError, match="shapes"):
        sinkhorn(torch.zeros(4, 3), torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        sinkhorn(torch.full((2, 2), math.nan), torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match="infeasible"):
        sinkhorn(torch.tensor([[0.0, -math.inf], [0.0, -math.inf]]), torch.ones(2), torch.tensor([1.0, 1.0]))


def test_non_convergence_warns_with_the_dedicated_class():
    pn, pl, pf = problem(n=400, c=10, seed=8, conc=0.2)
    with pytest.warns(SolverWarning, match="raise max_iter"):
        _, res = surrogate_labels(pn, pl, pf, eps=0.05, tol=1e-12, max_iter=3, return_result=True, solver="sinkhorn")
    assert not res.converged and res.iterations == 3 and res.marginal_error > 1e-12


def test_warm_start_gives_the_same_plan_in_fewer_iterations():
    pn, pl, pf = problem(n=2000, c=10, seed=5, conc=0.05)
    pn, pf = (np.clip(p, 1e-12, None) / np.clip(p, 1e-12, None).sum(1, keepdims=True) for p in (pn, pf))
    t = np.linspace(1, 10, 10) ** 2  # far from the kernel's own column sums: ~90 iterations from a cold start
    kw = dict(class_totals=t, tol=1e-9, max_iter=20000, return_result=True, omega=1.0,  # plain: warm start alone
              solver="sinkhorn")
    q0, r0 = surrogate_labels(pn, pl, pf, **kw)
    # the next refresh: the target's predictions moved a little
    pf2 = pf * np.random.default_rng(1).uniform(0.99, 1.01, pf.shape)
    pf2 /= pf2.sum(1, keepdims=True)
    cold, rc = surrogate_labels(pn, pl, pf2, **kw)
    warm, rw = surrogate_labels(pn, pl, pf2, **kw, init_log_v=r0.log_v)
    assert rc.converged and rw.converged
    assert np.abs(warm - cold).max() < 1e-6
    assert rc.iterations > 50 and rw.iterations < 0.7 * rc.iterations, (rw.iterations, rc.iterations)
    # the solution of the very same problem is a fixed point: warm-started, it stops at once
    _, again = surrogate_labels(pn, pl, pf, **kw, init_log_v=r0.log_v)
    assert again.iterations <= 2
    with pytest.raises(ValueError, match="init_log_v must hold 10 column potentials"):
        surrogate_labels(pn, pl, pf, init_log_v=np.zeros(3))
    with pytest.raises(ValueError, match="finite where b > 0"):
        surrogate_labels(pn, pl, pf, init_log_v=torch.full((10,), math.nan, dtype=torch.float64))


def _hard_refresh():
    """A real D-SINK refresh, 1,000 of its rows: f_N's and the target's training probabilities and f_L's argmax
    class totals (Fashion-MNIST-LT rho=100, 40 % noise; benchmarks/claims.py). Plain Sinkhorn needs >2,000
    iterations to 1e-8: sharp probabilities, and totals far from the kernel's own column sums."""
    z = np.load(Path(__file__).parent / "hard_refresh.npz")
    pn, pf = (z[k].astype(np.float64) for k in ("p_noise", "p_target"))
    return pn / pn.sum(1, keepdims=True), pf / pf.sum(1, keepdims=True), z["class_totals"].astype(np.float64)


def test_over_relaxation_reaches_the_same_plan_in_far_fewer_iterations():
    pn, pf, t = _hard_refresh()
    kw = dict(class_totals=t, tol=1e-8, max_iter=50000, return_result=True, solver="sinkhorn")
    plain, rp = surrogate_labels(pn, pn, pf, omega=1.0, **kw)
    auto, ra = surrogate_labels(pn, pn, pf, **kw)  # default: adaptive over-relaxation
    fixed, rf = surrogate_labels(pn, pn, pf, omega=1.8, **kw)
    assert rp.converged and ra.converged and rf.converged
    assert rp.iterations > 2000 and ra.iterations < rp.iterations / 8 and rf.iterations < rp.iterations / 5, \
        (rp.iterations, ra.iterations, rf.iterations)
    for q in (auto, fixed):  # exact rows, columns within tol, and the same plan as plain Sinkhorn
        assert np.abs(q.sum(1) - 1).max() < 1e-12
        assert np.abs(q.sum(0) - t).sum() / len(q) < 1e-8
        assert np.abs(q - plain).max() < 1e-5
    # on easy problems the automatic choice costs nothing
    pn2, pl2, pf2 = problem(n=3000, c=10, seed=7, conc=0.3)
    _, e1 = surrogate_labels(pn2, pl2, pf2, omega=1.0, tol=1e-8, return_result=True, solver="sinkhorn")
    _, e2 = surrogate_labels(pn2, pl2, pf2, tol=1e-8, return_result=True, solver="sinkhorn")
    assert e2.iterations <= e1.iterations
    for bad in (0.0, 2.0, "fast"):
        with pytest.raises(ValueError, match="omega must be in"):
            surrogate_labels(pn, pn, pf, omega=bad)


def test_a_too_large_fixed_omega_falls_back_to_plain_sinkhorn_and_converges():
    pn, pl, pf = problem(n=3000, c=10, seed=7, conc=0.03)
    pn, pf = (np.clip(p, 1e-12, None) / np.clip(p, 1e-12, None).sum(1, keepdims=True) for p in (pn, pf))
    t = np.geomspace(1, 1000, 10)  # omega 1.8 oscillates here without converging
    kw = dict(class_totals=t, tol=1e-8, max_iter=5000, solver="sinkhorn")
    q, r = surrogate_labels(pn, pl, pf, omega=1.8, return_result=True, **kw)
    ref = surrogate_labels(pn, pl, pf, omega=1.0, **kw)
    assert r.converged and np.abs(q - ref).max() < 1e-6


def test_block_rows_cache_sized_on_cpu_one_block_on_accelerators():
    from dsink.ot.sinkhorn import _block_rows

    assert _block_rows(1_000_000, 10, 8, torch.device("cpu")) == (1 << 21) // 80  # about 2 MB of float64
    assert _block_rows(1_000_000, 10, 4, torch.device("cpu")) == (1 << 21) // 40
    assert _block_rows(1_000_000, 10, 8, torch.device("cuda")) == 1_000_000  # launches, not traffic, on a GPU
    assert _block_rows(0, 10, 8, torch.device("cuda")) == 1


@pytest.mark.parametrize("omega", [None, 1.0])
def test_one_block_and_many_blocks_give_the_same_plan(monkeypatch, omega):
    """The GPU's single block and the CPU's cache-sized blocks are the same arithmetic up to summation order."""
    import importlib

    sk = importlib.import_module("dsink.ot.sinkhorn")  # the module (the package exports the function by that name)
    pn, pl, pf = problem(n=500, c=6, seed=3)
    L = torch.as_tensor((np.log(pn) + np.log(pf)) / 2)
    a, b = torch.ones(500, dtype=torch.float64), torch.as_tensor(pl.sum(0) * 500 / pl.sum())
    plans = {}
    for rows in (7, 500):
        monkeypatch.setattr(sk, "_block_rows", lambda n, c, itemsize, device, rows=rows: rows)
        res = sk.sinkhorn(L, a, b, tol=1e-9, omega=omega)
        assert res.converged
        plans[rows] = res.plan
    assert torch.allclose(plans[7], plans[500], atol=1e-12, rtol=0)
