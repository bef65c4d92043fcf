r"""A plain log-domain Sinkhorn, written for reading: the reference :func:`dsink.ot.sinkhorn` is tested against.

Same problem and same meaning of the arguments as :func:`~dsink.ot.sinkhorn` (see ``docs/dsink.md``): the
plan :math:`Q = \operatorname{diag}(e^{f})\, e^{L} \operatorname{diag}(e^{g})` with row sums ``a`` and column
sums ``b``, for the log-kernel :math:`L = -P / \varepsilon` (``eps`` is already in it). The potentials
alternate between the two exact updates

.. math::

    g_j = \log b_j - \log \textstyle\sum_i e^{f_i + L_{ij}}, \qquad
    f_i = \log a_i - \log \textstyle\sum_j e^{L_{ij} + g_j},

each one ``logsumexp`` over the whole kernel: no blocks, no scalings to absorb, no over-relaxation, no
warm start, one process, float64. Slow and memory-hungry (a few N x C temporaries per iteration) but
short enough to check by eye.
"""

from __future__ import annotations

import math
import warnings

import torch

from ..errors import SolverWarning


def sinkhorn_reference(log_kernel, a, b, *, tol: float = 1e-12, max_iter: int = 100_000) -> torch.Tensor:
    """The entropic OT plan (N, C), float64, of the log-kernel ``log_kernel`` (N, C) with row marginal
    ``a`` (N,) and column marginal ``b`` (C,) of equal mass; ``-inf`` kernel entries get no mass.

    Stops when the column error ``sum_j |sum_i Q_ij - b_j| / sum_j b_j`` of the plan (whose rows are exact
    after each row update) is at most ``tol``; a :class:`~dsink.errors.SolverWarning` after ``max_iter``.
    """
    L, a, b = (torch.as_tensor(x).to(torch.float64) for x in (log_kernel, a, b))
    log_a, log_b = a.log(), b.log()  # -inf where there is no mass
    f = torch.zeros(len(a), dtype=torch.float64)
    for _ in range(max_iter):
        g = torch.where(b > 0, log_b - torch.logsumexp(f[:, None] + L, 0), -math.inf)
        f = torch.where(a > 0, log_a - torch.logsumexp(L + g, 1), -math.inf)
        plan = torch.exp(f[:, None] + L + g)
        if float((plan.sum(0) - b).abs().sum()) <= tol * float(b.sum()):
            return plan
    warnings.warn(f"sinkhorn_reference did not reach tol {tol:g} in {max_iter} iterations", SolverWarning, stacklevel=2)
    return plan
