r"""The same entropic OT problem as :func:`dsink.ot.sinkhorn`, solved by Newton's method on its semi-dual.

With the row potentials eliminated (each row of the plan is ``a_i softmax(L_i + beta)``), the problem is the
unconstrained maximisation of a smooth concave function of the C column potentials alone:

.. math::

    g(\beta) = \sum_j b_j \beta_j - \sum_i a_i \log \sum_j e^{L_{ij} + \beta_j},
    \qquad \nabla g = b - P^\top a, \qquad
    -\nabla^2 g = \operatorname{diag}(P^\top a) - P^\top \operatorname{diag}(a) P,

with :math:`P` the row-softmax of :math:`L + \beta`. Every iteration is one pass over the N x C kernel (the
softmax, its column sums and the C x C matrix :math:`P^\top \operatorname{diag}(a) P`) and a C x C solve;
Newton's method converges in a handful of iterations where Sinkhorn's scaling iterations need tens to
hundreds (D-SINK's refreshes at C = 10: about 100 scaling iterations at tol 1e-6). The Hessian's cost grows
with C^2, so :func:`solve` uses Newton for few classes and the scaling iterations beyond (``NEWTON_MAX_CLASSES``).

The computation is in float64 whatever the input's dtype (one N x C float64 work buffer, which becomes the plan):
with float32 sums a plan that meets the marginals to 1e-5 can still be 1e-3 away from the solution along the
semi-dual's flat directions. The plan is returned in the input's dtype.

The rows of the returned plan are exact (up to rounding); the stopping rule is the relative L1 column error
``sum_j |Q^T 1 - b|_j / sum b <= tol``, the mirror of Sinkhorn's row error. Steps are damped by a backtracking
line search on g; if the line search stalls or ``max_iter`` is reached, the solve continues with Sinkhorn
from the current column potentials, so the answer never depends on Newton converging.

Distributed: each process passes its rows; the column sums, the C x C matrix and the objective are
all-reduced (one collective of C^2 + C + 1 numbers per pass).
"""

from __future__ import annotations

import math

import torch

from ..distributed import all_reduce, world_size
from .sinkhorn import SinkhornResult, _check, _default_tol, check_omega, sinkhorn

NEWTON_MAX_CLASSES = 32  # solve(): Newton up to this many classes, Sinkhorn's scaling iterations beyond
_NEWTON_CAP = 50  # Newton iterations before the solve is handed to Sinkhorn (a handful suffice when it works)
_ARMIJO = 1e-4  # sufficient increase of g, as a fraction of the step's first-order prediction
_MIN_STEP = 1.0 / 1024  # a line search that needs a shorter step hands the solve to Sinkhorn


def _pass(L: torch.Tensor, beta: torch.Tensor, a: torch.Tensor, work: torch.Tensor, dist_on: bool, hessian: bool,
          rows: tuple[torch.Tensor | None, bool]):
    """Row-softmax of ``L + beta`` into ``work``; returns (column sums P^T a, ``-sum_i a_i lse_i`` (g without
    its ``b . beta`` term), ``P^T diag(a) P`` or None, log-normaliser per row ``lse``). Rows without mass, or with an all-zero kernel and no mass, contribute nothing.
    ``rows`` (:func:`_row_masses`, fixed for a solve): the rows with mass when some have none, and whether every row's
    mass is 1 (D-SINK's case: no mask and no weighting, the same sums as with them)."""
    torch.add(L, beta, out=work)
    m = work.amax(1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    work.sub_(m).exp_()
    s = work.sum(1, keepdim=True)
    lse = (m + s.log()).squeeze(1)
    work.div_(s.clamp_min(torch.finfo(work.dtype).tiny))
    c = L.shape[1]
    buf = torch.zeros(c + 1 + (c * c if hessian else 0), dtype=torch.float64, device=L.device)
    col = work.t() @ a
    buf[:c] = col.double()
    pos, unit = rows
    buf[c] = -(a.double() * lse.double()).sum() if pos is None else -(a[pos].double() * lse[pos].double()).sum()
    if hessian:
        wa = work if unit else work * a[:, None]
        buf[c + 1:] = (wa.t() @ work).double().reshape(-1)
    if dist_on:
        all_reduce(buf)
    h = buf[c + 1:].reshape(c, c) if hessian else None
    return buf[:c], float(buf[c]), h, lse


def _row_masses(a: torch.Tensor) -> tuple[torch.Tensor | None, bool]:
    """What :func:`_pass` needs of the row masses, found once per solve: the mask of the rows with mass (None when
    every row has some) and whether every mass is 1."""
    pos = a > 0
    return (None if bool(pos.all()) else pos), bool((a == 1).all())


def semidual_newton(
    log_kernel: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    eps: float = 1.0,
    tol: float | None = None,
    max_iter: int = 1000,
    distributed: bool | None = None,
    init_log_v: torch.Tensor | None = None,
) -> SinkhornResult:
    """Entropic OT plan with marginals ``a`` (rows) and ``b`` (columns) by Newton's method on the semi-dual
    (module docstring). Same arguments, same problem and same result type as :func:`dsink.ot.sinkhorn`.
    After ``min(_NEWTON_CAP, max_iter)`` Newton iterations, or when a line search stalls, the solve is finished by
    :func:`~dsink.ot.sinkhorn` from the current column potentials, with the passes left of ``max_iter``.
    ``iterations`` in the result counts the passes over the kernel (Newton's, its line searches' and any
    Sinkhorn iterations); a :class:`~dsink.errors.SolverWarning` says when ``tol`` was not reached."""
    world = world_size() if distributed is None or distributed else 1
    dist_on = world > 1
    dtype = torch.float64  # always: float32 sums leave the flat directions of g unresolved (plans off by 1e-3)
    L = log_kernel if log_kernel.dtype == dtype else log_kernel.to(dtype)
    a = torch.as_tensor(a, device=L.device).to(dtype)
    b = torch.as_tensor(b, device=L.device).to(dtype)
    _check(L, a, b, eps, world)
    n, c = L.shape
    mass = float(all_reduce(a.sum().double().clone()) if dist_on else a.sum())
    tol = _default_tol(dtype, mass) if tol is None else tol
    if c == 0 or mass <= 0:
        return sinkhorn(L, a, b, eps=eps, tol=tol, max_iter=max_iter, distributed=dist_on, init_log_v=init_log_v)
    row_max = L.amax(1)
    if bool((torch.isnan(row_max) | (row_max == math.inf)).any()):
        raise ValueError("log_kernel has NaN or +inf entries; the cost must be finite or +inf (log_kernel -inf)")
    if bool(((row_max == -math.inf) & (a > 0)).any()):
        raise ValueError("a row with positive mass has an all-zero kernel (every cost infinite): the problem is infeasible")
    bd = b.double()
    live = bd > 0  # columns without mass get beta = -inf and stay out of the Newton system
    beta = torch.zeros(c, dtype=torch.float64, device=L.device)
    if init_log_v is not None:
        init = torch.as_tensor(init_log_v, device=L.device).double().reshape(-1)
        if init.shape != (c,) or not bool(torch.isfinite(init[live]).all()):
            raise ValueError(f"init_log_v must hold {c} column potentials, finite where b > 0 (got shape "
                             f"{tuple(init.shape)}); pass log_v of an earlier SinkhornResult of the same shape")
        beta = torch.where(live, init, beta)
    beta = torch.where(live, beta, torch.full_like(beta, -math.inf))
    idx = live.nonzero().squeeze(1)
    work = torch.empty_like(L)
    rows = _row_masses(a)
    passes = 0
    col, g, h, lse = _pass(L, beta.to(dtype), a, work, dist_on, True, rows)
    passes += 1
    if bool(((col <= 0) & live).any()):
        raise ValueError("a class with positive mass has an all-zero kernel column: the problem is infeasible")
    def objective(part: float, beta: torch.Tensor) -> float:
        return part + float((bd[idx] * beta[idx]).sum())

    if init_log_v is None:  # the first scaling step (v = b / K^T 1) as a start: the right column scale at once
        beta = torch.where(live, beta + bd.log() - col.log(), beta)
        col, g, h, lse = _pass(L, beta.to(dtype), a, work, dist_on, True, rows)
        passes += 1
    g = objective(g, beta)
    ones = torch.ones(len(idx), dtype=torch.float64, device=L.device)
    err = float((col - bd).abs().sum()) / mass
    it = 0
    handed = False
    while err > tol:
        if it == min(_NEWTON_CAP, max_iter):
            handed = True
            break
        it += 1
        grad = (bd - col)[idx]
        hm = torch.diag(col[idx]) - h[idx][:, idx]  # -Hessian: positive semi-definite, null vector 1
        hm = hm + (float(col[idx].mean()) / len(idx)) * torch.outer(ones, ones)  # pins the shift (grad sums to 0)
        try:
            d = torch.linalg.solve(hm, grad)
        except RuntimeError:  # a singular system (a column whose mass sits on rows of one class): let Sinkhorn go on
            handed = True
            break
        d = d - d.mean()
        slope = float(grad @ d)
        step, accepted = 1.0, False
        while step >= _MIN_STEP:
            trial = beta.clone()
            trial[idx] += step * d
            t_col, t_g, t_h, t_lse = _pass(L, trial.to(dtype), a, work, dist_on, True, rows)
            passes += 1
            t_g = objective(t_g, trial)
            t_err = float((t_col - bd).abs().sum()) / mass
            if t_g >= g + _ARMIJO * step * slope or t_err <= tol:
                accepted = True
                break
            step /= 2
        if not accepted:
            handed = True
            break
        beta, col, g, h, lse, err = trial, t_col, t_g, t_h, t_lse, t_err
    if handed:  # Sinkhorn from here: it converges from any start, and this one is close
        res = sinkhorn(L, a, b, eps=eps, tol=tol, max_iter=max(max_iter - passes, 0), distributed=dist_on,
                       init_log_v=torch.where(live, beta, torch.zeros_like(beta)).to(dtype))
        return SinkhornResult(res.plan, res.log_u, res.log_v, passes + res.iterations, res.marginal_error,
                              res.converged)
    # work holds the row-softmax at beta (the last accepted pass): the plan is a_i times it
    if not rows[1]:
        work.mul_(a[:, None])
    log_u = torch.where(a > 0, a.log() - lse, torch.full_like(lse, -math.inf))
    out_dtype = log_kernel.dtype if log_kernel.dtype.is_floating_point else dtype
    return SinkhornResult(work.to(out_dtype), log_u, beta.to(dtype), passes, err, True)


def solve(log_kernel: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, solver: str = "auto",
          omega: float | None = None, **kw) -> SinkhornResult:
    """:func:`semidual_newton` (``solver="newton"``, or ``"auto"`` with at most ``NEWTON_MAX_CLASSES``
    classes) or :func:`~dsink.ot.sinkhorn` (``"sinkhorn"``, or ``"auto"`` beyond); ``omega`` is Sinkhorn's."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; valid: {', '.join(SOLVERS)}")
    check_omega(omega)  # checked whichever solver runs
    if solver == "newton" or (solver == "auto" and log_kernel.shape[-1] <= NEWTON_MAX_CLASSES):
        return semidual_newton(log_kernel, a, b, **kw)
    return sinkhorn(log_kernel, a, b, omega=omega, **kw)


SOLVERS = ("auto", "newton", "sinkhorn")
