r"""Entropic optimal transport between N samples and C classes (Sinkhorn-Knopp, stabilised).

Solves

.. math::

    \min_{Q \in \mathbb{R}_{\ge 0}^{N \times C}} \langle Q, P \rangle - \varepsilon H(Q)
    \quad \text{s.t.} \quad Q \mathbf{1}_C = a, \qquad Q^\top \mathbf{1}_N = b,

with cost :math:`P` (given as the log-kernel :math:`L = -P/\varepsilon`), entropy
:math:`H(Q) = -\sum_{ic} Q_{ic} (\log Q_{ic} - 1)`, sample marginal :math:`a \in \mathbb{R}^N_{\ge 0}`
and class marginal :math:`b \in \mathbb{R}^C_{\ge 0}` of equal mass. The solution is
:math:`Q = \operatorname{diag}(e^{\alpha}) \, e^{L} \operatorname{diag}(e^{\beta})` for dual potentials
:math:`\alpha, \beta` (in units of :math:`\varepsilon`).

Algorithm: scaling iterations :math:`u \leftarrow a / (K v)`, :math:`v \leftarrow b / (K^\top u)` on the
kernel :math:`K = e^{L + \alpha \oplus \beta}`; whenever the scalings leave ``[1/absorb, absorb]`` they
are absorbed into the log-domain potentials and :math:`K` is rebuilt from :math:`L` (Schmitzer's
stabilised scaling). The potentials keep zeros in :math:`K` (``L = -inf``) and small
:math:`\varepsilon` finite. Each iteration is one pass over :math:`K` in cache-sized row blocks: per
block, :math:`K_b v`, then :math:`u_b = a_b / (K_b v)` and the partial column sums :math:`K_b^\top u_b`
while the block is still in cache, so an iteration reads the N x C kernel from memory once, not twice.
The row-marginal error of the plan after each column update comes for free from the same pass.

Memory: one work buffer of the size of ``log_kernel``, which becomes the returned plan; no other
N x C array is allocated (the kernel is rebuilt in cache-sized row blocks).

Distributed: when ``torch.distributed`` is initialised, each process passes its shard of rows (its
``log_kernel`` rows and ``a`` entries) and the same ``b``; column sums, errors and absorption
decisions are all-reduced (one collective of C + 2 numbers per iteration), so the shards together
hold the single-process solution.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from ..errors import SolverWarning


@dataclass
class SinkhornResult:
    """Solution of :func:`sinkhorn`.

    Attributes
    ----------
    plan : Tensor (N, C)
        Transport plan :math:`Q` (this process's rows when distributed).
    log_u, log_v : Tensor (N,), (C,)
        Dual potentials :math:`\\alpha, \\beta` in units of epsilon: ``plan = exp(log_u[:, None] + L + log_v)``.
    iterations : int
    marginal_error : float
        ``sum_i |Q_i. - a_i| / sum_i a_i`` after the last column update (columns exact then); the
        returned plan ends with a row update, so its rows are exact and its column error is of this order.
    converged : bool
        ``marginal_error <= tol``.
    """

    plan: torch.Tensor
    log_u: torch.Tensor
    log_v: torch.Tensor
    iterations: int
    marginal_error: float
    converged: bool


def _dist_world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t


def _check(log_kernel: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eps: float, world: int) -> None:
    if log_kernel.dim() != 2:
        raise ValueError(f"log_kernel must be 2-D (N, C), got shape {tuple(log_kernel.shape)}")
    n, c = log_kernel.shape
    if a.shape != (n,) or b.shape != (c,):
        raise ValueError(f"marginals must have shapes ({n},) and ({c},), got {tuple(a.shape)} and {tuple(b.shape)}")
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a positive finite number, got {eps}")
    for name, m in (("a", a), ("b", b)):
        if not torch.isfinite(m).all() or (m < 0).any():
            raise ValueError(f"marginal {name} must be finite and non-negative")
    mass_a = float(a.sum()) if world == 1 else float(_all_reduce(a.sum().double().clone()))
    mass_b = float(b.sum())
    if abs(mass_a - mass_b) > 1e-5 * max(mass_a, mass_b, 1.0):
        raise ValueError(f"marginals have different masses (sum a = {mass_a:.6g}, sum b = {mass_b:.6g}); rescale one of them")


_PROBE = 20  # plain iterations before the automatic over-relaxation starts
_WINDOW = 10  # iterations over which the convergence rate is measured, and between adjustments of omega
_STALL = 100  # iterations without a new lowest error after which over-relaxation is abandoned
_OMEGA_MAX = 1.9


def _adapt_omega(errs: list[float], w: float) -> float:
    """Adaptive over-relaxation (the classic SOR estimate, Hageman & Young): from the rate ``lam`` observed
    over the last window at relaxation ``w``, infer the plain rate ``theta = (lam + w - 1)^2 / (lam w^2)``
    and move to its optimum ``2 / (1 + sqrt(1 - theta))``; omega only grows, up to ``_OMEGA_MAX``."""
    if errs[-_WINDOW - 1] <= 0 or errs[-1] <= 0:
        return w
    lam = (errs[-1] / errs[-_WINDOW - 1]) ** (1.0 / _WINDOW)
    if not 0.0 < lam < 1.0:
        return w
    theta = (lam + w - 1.0) ** 2 / (lam * w * w)
    if not 0.0 < theta < 1.0:
        return w
    return max(w, min(_OMEGA_MAX, 2.0 / (1.0 + math.sqrt(1.0 - theta))))


def _block_rows(c: int, itemsize: int) -> int:
    """Rows per block of about 2 MB (measured best here, between 1 and 4 MB): a block stays in cache
    between the products K v and K^T u of one pass."""
    return max(1, (1 << 21) // (max(c, 1) * itemsize))


def sinkhorn(
    log_kernel: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    eps: float = 1.0,
    tol: float | None = None,
    max_iter: int = 1000,
    absorb: float = 1e30,
    distributed: bool | None = None,
    init_log_v: torch.Tensor | None = None,
    omega: float | None = None,
) -> SinkhornResult:
    r"""Entropic OT plan with marginals ``a`` (rows) and ``b`` (columns); see the module docstring.

    Parameters
    ----------
    log_kernel : Tensor (N, C)
        :math:`L = -P / \varepsilon` (``-inf`` where the cost is infinite, i.e. mass is forbidden).
        Float32 or float64 (half precision is computed in float32); CPU or CUDA. Not modified.
    a : Tensor (N,)
        Row (sample) marginal, non-negative.
    b : Tensor (C,)
        Column (class) marginal, non-negative, same total mass as ``a`` (over all processes).
    eps : float
        Only used to report potentials in cost units by callers; the kernel already includes it.
    tol : float, optional
        Stop when the relative L1 row-marginal error ``sum|Q 1 - a| / sum a`` is at most ``tol``.
        Default: 1e-6 in float64; in float32 ``max(1e-5, 2e-7 * sqrt(N))`` (float32 sums over N rows
        carry an error floor of roughly ``sqrt(N) * 6e-8``, e.g. 7e-6 at N = 13k, 6e-5 at N = 1M).
    max_iter : int
        Iteration cap; a :class:`~dsink.errors.SolverWarning` is issued when it is reached first.
    absorb : float
        Scalings beyond ``[1/absorb, absorb]`` are absorbed into the log-domain potentials.
    distributed : bool, optional
        All-reduce across processes; default: when ``torch.distributed`` is initialised with > 1 process.
    init_log_v : Tensor (C,), optional
        Warm start: column potentials to start from, e.g. ``log_v`` of the solve of a nearby problem (D-SINK's
        previous refresh). Only the C column potentials are needed: the first row update recomputes the rows.
        The solution is the same (within ``tol``); a good start needs far fewer iterations.
    omega : float, optional
        Over-relaxation of the scaling updates, ``u <- u^(1-omega) (a / K v)^omega`` (and the same for v):
        1 is plain Sinkhorn, values in (1, 2) converge faster on ill-conditioned problems (sharp
        probabilities, class totals far from the kernel's column sums). Default (None): automatic - plain
        iterations first, then ``omega = 2 / (1 + sqrt(1 - theta))`` (at most 1.9) with the plain rate
        ``theta`` inferred from the observed rate every few iterations (adaptive SOR). Automatic or fixed,
        it falls back to plain Sinkhorn for good if the error grows a thousandfold or stops improving. Same fixed
        point and stopping rule; the returned plan always ends with an exact row update.

    Returns
    -------
    SinkhornResult

    Raises
    ------
    ValueError
        Wrong shapes, NaN or negative inputs, different masses, or a row/column that cannot carry its
        mass (all its kernel entries are zero).
    """
    world = _dist_world() if distributed is None or distributed else 1
    dist_on = world > 1
    dtype = torch.float64 if log_kernel.dtype == torch.float64 else torch.float32
    L = log_kernel if log_kernel.dtype == dtype else log_kernel.to(dtype)
    a = torch.as_tensor(a, device=L.device).to(dtype)
    b = torch.as_tensor(b, device=L.device).to(dtype)
    _check(L, a, b, eps, world)
    n, c = L.shape
    tiny = torch.finfo(dtype).tiny
    mass = float(_all_reduce(a.sum().clone()) if dist_on else a.sum())
    if tol is None:  # float32: stay above the summation error floor (about sqrt(N) * 6e-8)
        tol = 1e-6 if dtype == torch.float64 else max(1e-5, 2e-7 * math.sqrt(max(mass, 1.0)))

    # Initial potentials: centre each row at its maximum so that the kernel's largest entry is 1.
    # The same pass finds NaN (amax propagates it) and +inf entries.
    row_max = L.amax(1) if c else torch.zeros(n, dtype=dtype, device=L.device)
    if n and c and bool((torch.isnan(row_max) | (row_max == math.inf)).any()):
        raise ValueError("log_kernel has NaN or +inf entries; the cost must be finite or +inf (log_kernel -inf)")
    if ((row_max == -math.inf) & (a > 0)).any():
        raise ValueError("a row with positive mass has an all-zero kernel (every cost infinite): the problem is infeasible")
    alpha = torch.where(torch.isfinite(row_max), -row_max, torch.zeros_like(row_max))
    beta = torch.zeros(c, dtype=dtype, device=L.device)
    if init_log_v is not None:
        init = torch.as_tensor(init_log_v, device=L.device).to(dtype).reshape(-1)
        if init.shape != (c,) or not bool(torch.isfinite(init[b > 0]).all()):
            raise ValueError(f"init_log_v must hold {c} column potentials, finite where b > 0 (got shape "
                             f"{tuple(init.shape)}); pass log_v of an earlier SinkhornResult of the same shape")
        beta = torch.where(b > 0, init, beta)
    K = torch.empty_like(L)
    rows = _block_rows(c, L.element_size())

    # Masks of positive mass, fixed for the whole solve; with full support (the D-SINK case) the range
    # checks below are one min/max reduction per vector.
    a_pos, b_pos = a > 0, b > 0
    a_full, b_full = bool(a_pos.all()), bool(b_pos.all())
    lo, hi = 1.0 / absorb, absorb
    v = torch.ones(c, dtype=dtype, device=L.device)
    u = torch.empty(n, dtype=dtype, device=L.device)
    u_prev = torch.empty_like(u)
    have_prev, rebuild = False, True
    if omega is not None and not (isinstance(omega, (int, float)) and 0 < omega < 2):
        raise ValueError(f"omega must be in (0, 2) (1 = plain Sinkhorn) or None for automatic, got {omega!r}")
    w = 1.0 if omega is None else float(omega)  # over-relaxation in use
    auto = omega is None
    u_rel = torch.empty_like(u) if (auto or w != 1.0) else None  # the relaxed row scaling (the plan's)
    errs: list[float] = []
    best_err, best_it = math.inf, 0
    relax = False  # the first iteration has no previous scaling to relax from
    # buf = [column sums K^T u (C), processes whose u left [1/absorb, absorb], row error of the last plan]
    buf = torch.empty(c + 2, dtype=dtype, device=L.device)
    err, it = math.inf, 0
    for it in range(max_iter + 1):
        # One pass over K per iteration, block by block (each block stays in cache): the row update
        # u = a / (K v), the row error of the previous plan diag(u_prev) K diag(v), and K^T u.
        col, row_err = buf[:c].zero_(), buf[c + 1].zero_()
        for s in range(0, n, rows):
            Kb = K[s : s + rows]
            if rebuild:
                torch.add(L[s : s + rows], alpha[s : s + rows, None], out=Kb)
                Kb.add_(beta).exp_()
            kv = torch.mv(Kb, v)
            if have_prev:
                row_err += (u_prev[s : s + rows] * kv - a[s : s + rows]).abs_().sum()
            ub = u[s : s + rows]
            torch.div(a[s : s + rows], kv.clamp_min_(tiny), out=ub)
            if relax:  # u_rel = u_prev^(1-w) * u^w; rows without mass stay 0
                rb = torch.pow(u_prev[s : s + rows], 1.0 - w, out=u_rel[s : s + rows]).mul_(ub.pow(w))
                if not a_full:
                    rb.masked_fill_(~a_pos[s : s + rows], 0.0)
                ub = rb
            torch.addmv(col, Kb.t(), ub, out=col)
        rebuild = False
        u_used = u_rel if relax else u
        ur = torch.aminmax(u_used if a_full else torch.where(a_pos, u_used, torch.ones_like(u_used))) if n else None
        buf[c] = float(n > 0 and (float(ur.min) < lo or float(ur.max) > hi))
        if dist_on:
            _all_reduce(buf)
        if have_prev:
            err = float(buf[c + 1]) / max(mass, tiny)
            errs.append(err)
        if err <= tol or it == max_iter:
            break  # u, v hold the last row update: the plan below has exact rows
        if it == 0 and ((col <= 0) & b_pos).any():  # the zero pattern of K never changes
            raise ValueError("a class with positive mass has an all-zero kernel column: the problem is infeasible")
        v_new = b / col if b_full else torch.where(b_pos, b / col.clamp_min(tiny), torch.zeros_like(b))
        if relax:
            v = v.pow(1.0 - w).mul_(v_new.pow(w))
            if not b_full:
                v.masked_fill_(~b_pos, 0.0)
            u_prev, u_rel = u_rel, u_prev  # the plan's row scaling is the relaxed one
        else:
            v = v_new
            u, u_prev = u_prev, u
        have_prev = True
        if w > 1.0 and errs and (errs[-1] > 1e3 * best_err or it - best_it > _STALL):
            w, auto = 1.0, False  # relaxation misbehaves (error blew up or stalled): plain Sinkhorn from now on
        elif auto and len(errs) >= _PROBE and (len(errs) - _PROBE) % _WINDOW == 0:
            w = _adapt_omega(errs, w)
        if errs and errs[-1] < best_err:
            best_err, best_it = errs[-1], it
        relax = w != 1.0  # from the second pass on there is a previous scaling to relax from
        vr = torch.aminmax(v if b_full else torch.where(b_pos, v, torch.ones_like(v)))
        if buf[c] > 0 or float(vr.min) < lo or float(vr.max) > hi:
            # Absorb the scalings into the potentials; K is rebuilt during the next pass.
            alpha = alpha + torch.where(a_pos, u_prev.log(), torch.zeros_like(u_prev))
            beta = beta + torch.where(b_pos, v.log(), torch.full_like(v, -math.inf))
            u_prev.fill_(1.0)
            v = torch.ones_like(v)
            rebuild = True
    # Final row update, in place in the work buffer: every row of Q carries exactly its mass a_i
    # (the column error is then of the order of the last marginal_error).
    for s in range(0, n, rows):
        K[s : s + rows].mul_(u[s : s + rows, None]).mul_(v)
    log_u = alpha + torch.where(a > 0, u.log(), torch.full_like(u, -math.inf))
    log_v = beta + torch.where(v > 0, v.log(), torch.full_like(v, -math.inf))
    converged = err <= tol
    if not converged:
        hint = ("raise max_iter or eps, or loosen tol" if dtype == torch.float64 else
                "raise max_iter or eps, loosen tol, or solve in float64 (float32 sums have an error floor near "
                f"{6e-8 * math.sqrt(max(mass, 1)):.1g} here)")
        warnings.warn(
            f"Sinkhorn stopped after {it} iterations with marginal error {err:.3g} > tol {tol:.3g}; {hint}",
            SolverWarning,
            stacklevel=2,
        )
    out_dtype = log_kernel.dtype if log_kernel.dtype.is_floating_point else dtype
    return SinkhornResult(K.to(out_dtype), log_u, log_v, it, err, converged)
