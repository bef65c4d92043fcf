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

Reading guide: :func:`sinkhorn` is the loop; one iteration is :func:`_block_pass` (row update, row error,
column sums), :func:`_column_update`, :meth:`_Relaxation.update` (omega) and, when the scalings leave
the range, :func:`_absorb`. :func:`dsink.ot.sinkhorn_reference` solves the same problem in a few plain
log-domain lines; the tests hold the two to the same plan.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from ..distributed import all_reduce, world_size
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
    mass_a = float(a.sum()) if world == 1 else float(all_reduce(a.sum().double().clone()))
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


def _block_rows(n: int, c: int, itemsize: int, device: torch.device) -> int:
    """Rows per block. On a CPU about 2 MB (measured best on the project's CPU, between 1 and 4 MB): a block
    stays in cache between the products K v and K^T u of one pass. On an accelerator all rows in one block:
    each block costs a handful of kernel launches, and with 2 MB blocks the launches, not the memory traffic,
    set the pace (docs/benchmarks.md, "On a GPU")."""
    if device.type != "cpu":
        return max(1, n)
    return max(1, (1 << 21) // (max(c, 1) * itemsize))


def check_omega(omega) -> None:
    if omega is not None and not (isinstance(omega, (int, float)) and 0 < omega < 2):
        raise ValueError(f"omega must be in (0, 2) (1 = plain Sinkhorn) or None for automatic, got {omega!r}")


class _Relaxation:
    """The over-relaxation omega of the scaling updates over one solve: fixed or automatic (adapted every
    ``_WINDOW`` iterations after ``_PROBE`` plain ones), with a fall-back to plain Sinkhorn for good when the
    error grows a thousandfold over its lowest value or makes no new lowest value for ``_STALL`` iterations.
    ``now`` is the omega of the coming iteration: 1 (plain) in the first, which has no previous scaling."""

    def __init__(self, omega: float | None) -> None:
        check_omega(omega)
        self.w = 1.0 if omega is None else float(omega)
        self.auto = omega is None
        self.now = 1.0
        self.errs: list[float] = []  # row-marginal error after each column update
        self.best_err, self.best_it = math.inf, 0

    def update(self, it: int) -> None:
        """After the column update of iteration ``it``: fall back, or adapt omega, and track the best error."""
        errs = self.errs
        if self.w > 1.0 and errs and (errs[-1] > 1e3 * self.best_err or it - self.best_it > _STALL):
            self.w, self.auto = 1.0, False  # relaxation misbehaves (error blew up or stalled): plain from now on
        elif self.auto and len(errs) >= _PROBE and (len(errs) - _PROBE) % _WINDOW == 0:
            self.w = _adapt_omega(errs, self.w)
        if errs and errs[-1] < self.best_err:
            self.best_err, self.best_it = errs[-1], it
        self.now = self.w


@dataclass
class _Solve:
    """The arrays of one solve. Fixed: log-kernel ``L``, marginals ``a``, ``b`` and their positive-mass
    masks (``a_full``: no zero in ``a``), rows per block, the absorption range ``[lo, hi]``. Updated: the
    log potentials ``alpha``, ``beta``, the scalings ``u``, ``v`` on top of them, ``u_prev`` (the row
    scaling of the current plan), ``u_rel`` (the relaxed row scaling, when relaxing; the three row buffers
    are swapped, never copied) and ``K = exp(L + alpha + beta)``, the work buffer (and the plan)."""

    L: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    a_pos: torch.Tensor
    b_pos: torch.Tensor
    a_full: bool
    b_full: bool
    rows: int
    lo: float
    hi: float
    tiny: float
    alpha: torch.Tensor
    beta: torch.Tensor
    K: torch.Tensor
    u: torch.Tensor
    u_prev: torch.Tensor
    v: torch.Tensor
    u_rel: torch.Tensor | None = None
    have_prev: bool = False  # u_prev holds a row scaling (after the first column update)
    rebuild: bool = True  # K must be rebuilt from the potentials during the next pass


def _start(L: torch.Tensor, a: torch.Tensor, b: torch.Tensor, init_log_v, absorb: float) -> _Solve:
    """Initial potentials: each row centred at its maximum, so that the kernel's largest entry is 1; columns
    at 0, or at the warm start ``init_log_v``. The same pass finds NaN (amax propagates it) and +inf
    entries, and rows with mass but an all-zero kernel."""
    n, c = L.shape
    dtype, dev = L.dtype, L.device
    row_max = L.amax(1) if c else torch.zeros(n, dtype=dtype, device=dev)
    if n and c and bool((torch.isnan(row_max) | (row_max == math.inf)).any()):
        raise ValueError("log_kernel has NaN or +inf entries; the cost must be finite or +inf (log_kernel -inf)")
    if ((row_max == -math.inf) & (a > 0)).any():
        raise ValueError("a row with positive mass has an all-zero kernel (every cost infinite): the problem is infeasible")
    alpha = torch.where(torch.isfinite(row_max), -row_max, torch.zeros_like(row_max))
    beta = torch.zeros(c, dtype=dtype, device=dev)
    if init_log_v is not None:
        init = torch.as_tensor(init_log_v, device=dev).to(dtype).reshape(-1)
        if init.shape != (c,) or not bool(torch.isfinite(init[b > 0]).all()):
            raise ValueError(f"init_log_v must hold {c} column potentials, finite where b > 0 (got shape "
                             f"{tuple(init.shape)}); pass log_v of an earlier SinkhornResult of the same shape")
        beta = torch.where(b > 0, init, beta)
    a_pos, b_pos = a > 0, b > 0  # with full support (the D-SINK case) range checks are one min/max each
    u = torch.empty(n, dtype=dtype, device=dev)
    return _Solve(L, a, b, a_pos, b_pos, bool(a_pos.all()), bool(b_pos.all()), _block_rows(n, c, L.element_size(), dev),
                  1.0 / absorb, absorb, torch.finfo(dtype).tiny, alpha, beta, torch.empty_like(L), u,
                  torch.empty_like(u), torch.ones(c, dtype=dtype, device=dev))


def _block_pass(s: _Solve, col: torch.Tensor, row_err: torch.Tensor, w: float) -> None:
    """One pass over K, block by block (each block stays in cache between its two products): rebuild the
    block from the potentials if asked, the row update ``u = a / (K v)`` (relaxed into ``u_rel`` when
    ``w != 1``: ``u_prev^(1-w) u^w``, rows without mass kept at 0), the row error ``sum |u_prev K v - a|``
    of the current plan into ``row_err`` and the column sums ``K^T u`` into ``col``."""
    L, K, a, v, u, u_prev, u_rel, tiny = s.L, s.K, s.a, s.v, s.u, s.u_prev, s.u_rel, s.tiny
    relax, rows = w != 1.0, s.rows
    for i in range(0, len(K), rows):
        blk = slice(i, i + rows)
        Kb = K[blk]
        if s.rebuild:
            torch.add(L[blk], s.alpha[blk, None], out=Kb)
            Kb.add_(s.beta).exp_()
        kv = torch.mv(Kb, v)
        if s.have_prev:
            row_err += (u_prev[blk] * kv - a[blk]).abs_().sum()
        ub = u[blk]
        torch.div(a[blk], kv.clamp_min_(tiny), out=ub)
        if relax:
            rb = torch.pow(u_prev[blk], 1.0 - w, out=u_rel[blk]).mul_(ub.pow(w))
            if not s.a_full:
                rb.masked_fill_(~s.a_pos[blk], 0.0)
            ub = rb
        torch.addmv(col, Kb.t(), ub, out=col)
    s.rebuild = False


def _column_update(s: _Solve, col: torch.Tensor, w: float) -> None:
    """``v = b / (K^T u)`` (relaxed: ``v^(1-w) (b / K^T u)^w``), columns without mass at 0; the pass's row
    scaling (``u_rel`` when relaxing, else ``u``) becomes ``u_prev``, the scaling of the current plan."""
    b, b_pos = s.b, s.b_pos
    v_new = b / col if s.b_full else torch.where(b_pos, b / col.clamp_min(s.tiny), torch.zeros_like(b))
    if w != 1.0:
        s.v = s.v.pow(1.0 - w).mul_(v_new.pow(w))
        if not s.b_full:
            s.v.masked_fill_(~b_pos, 0.0)
        s.u_prev, s.u_rel = s.u_rel, s.u_prev
    else:
        s.v = v_new
        s.u, s.u_prev = s.u_prev, s.u
    s.have_prev = True


def _outside(s: _Solve, x: torch.Tensor, pos: torch.Tensor, full: bool) -> bool:
    """Whether a scaling's entries with mass (``pos``) leave ``[lo, hi]``."""
    if not len(x):
        return False
    r = torch.aminmax(x if full else torch.where(pos, x, torch.ones_like(x)))
    return float(r.min) < s.lo or float(r.max) > s.hi


def _absorb(s: _Solve) -> None:
    """Absorb the scalings of the current plan into the log potentials (``alpha += log u_prev``,
    ``beta += log v``) and reset them to 1; K is rebuilt from the potentials during the next pass."""
    s.alpha = s.alpha + torch.where(s.a_pos, s.u_prev.log(), torch.zeros_like(s.u_prev))
    s.beta = s.beta + torch.where(s.b_pos, s.v.log(), torch.full_like(s.v, -math.inf))
    s.u_prev.fill_(1.0)
    s.v = torch.ones_like(s.v)
    s.rebuild = True


def _final_rows(s: _Solve) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The plan ``diag(u) K diag(v)`` of the last row update, in place in the work buffer (every row carries
    exactly its mass a_i), and its log potentials."""
    for i in range(0, len(s.K), s.rows):
        s.K[i : i + s.rows].mul_(s.u[i : i + s.rows, None]).mul_(s.v)
    log_u = s.alpha + torch.where(s.a > 0, s.u.log(), torch.full_like(s.u, -math.inf))
    log_v = s.beta + torch.where(s.v > 0, s.v.log(), torch.full_like(s.v, -math.inf))
    return s.K, log_u, log_v


def _default_tol(dtype: torch.dtype, mass: float) -> float:
    """1e-6 in float64; in float32 above the summation error floor (about sqrt(N) * 6e-8)."""
    return 1e-6 if dtype == torch.float64 else max(1e-5, 2e-7 * math.sqrt(max(mass, 1.0)))


def _warn_unconverged(it: int, err: float, tol: float, dtype: torch.dtype, mass: float) -> None:
    hint = ("raise max_iter or eps, or loosen tol" if dtype == torch.float64 else
            "raise max_iter or eps, loosen tol, or solve in float64 (float32 sums have an error floor near "
            f"{6e-8 * math.sqrt(max(mass, 1)):.1g} here)")
    warnings.warn(f"Sinkhorn stopped after {it} iterations with marginal error {err:.3g} > tol {tol:.3g}; {hint}",
                  SolverWarning, stacklevel=3)


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
    world = world_size() if distributed is None or distributed else 1
    dist_on = world > 1
    dtype = torch.float64 if log_kernel.dtype == torch.float64 else torch.float32
    L = log_kernel if log_kernel.dtype == dtype else log_kernel.to(dtype)
    a = torch.as_tensor(a, device=L.device).to(dtype)
    b = torch.as_tensor(b, device=L.device).to(dtype)
    _check(L, a, b, eps, world)
    mass = float(all_reduce(a.sum().clone()) if dist_on else a.sum())
    tol = _default_tol(dtype, mass) if tol is None else tol
    s = _start(L, a, b, init_log_v, absorb)
    rel = _Relaxation(omega)
    if rel.auto or rel.w != 1.0:
        s.u_rel = torch.empty_like(s.u)
    c = L.shape[1]
    # buf = [column sums K^T u (C), processes whose u left [lo, hi], row error of the current plan]: one
    # all-reduce per iteration when distributed
    buf = torch.empty(c + 2, dtype=dtype, device=L.device)
    err, it = math.inf, 0
    for it in range(max_iter + 1):
        w = rel.now
        col, row_err = buf[:c].zero_(), buf[c + 1].zero_()
        _block_pass(s, col, row_err, w)
        buf[c] = float(_outside(s, s.u_rel if w != 1.0 else s.u, s.a_pos, s.a_full))
        if dist_on:
            all_reduce(buf)
        if s.have_prev:
            err = float(buf[c + 1]) / max(mass, s.tiny)
            rel.errs.append(err)
        if err <= tol or it == max_iter:
            break  # u, v hold the last row update: the plan below has exact rows
        if it == 0 and ((col <= 0) & s.b_pos).any():  # the zero pattern of K never changes
            raise ValueError("a class with positive mass has an all-zero kernel column: the problem is infeasible")
        _column_update(s, col, w)
        rel.update(it)
        v_out = _outside(s, s.v, s.b_pos, s.b_full)
        if buf[c] > 0 or v_out:
            _absorb(s)
    plan, log_u, log_v = _final_rows(s)
    converged = err <= tol  # False for a NaN error too
    if not converged:
        _warn_unconverged(it, err, tol, dtype, mass)
    out_dtype = log_kernel.dtype if log_kernel.dtype.is_floating_point else dtype
    return SinkhornResult(plan.to(out_dtype), log_u, log_v, it, err, converged)
