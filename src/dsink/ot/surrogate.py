r"""D-SINK surrogate labels from any three probability arrays (numpy or torch).

The paper's problem (``cost="noise+target"``; other costs and class totals: :func:`surrogate_labels`):

.. math::

    \min_Q \sum_i \mathrm{KL}(q_i \| p^N_i) + \mathrm{KL}(q_i \| p^f_i)
    \quad \text{s.t.} \quad \textstyle\sum_i q_i = t, \quad q_i \in \Delta^C,

where :math:`t` are class totals taken from the imbalance-robust model. This is entropic OT with cost
:math:`-\log p^N - \log p^f` and :math:`\varepsilon = 2`; its kernel is :math:`\sqrt{p^N \odot p^f}`, so
each :math:`q_i` is the renormalised geometric mean of :math:`p^N_i` and :math:`p^f_i` times a per-class
factor that makes the totals match :math:`t`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..distributed import all_reduce, world_size
from .newton import SOLVERS, solve
from .sinkhorn import SinkhornResult

log = logging.getLogger(__name__)

CLASS_TOTALS = ("soft", "argmax", "noise_soft", "noise_argmax", "confident")
# surrogate_labels' presets: the cost and class totals of the paper's problem and of dsink's trainer default
SURROGATE_PRESETS = {"paper": {"cost": "noise+target", "class_totals": "soft"},
                     "dsink": {"cost": "average+target", "class_totals": "noise_argmax"}}
COSTS = ("noise+target", "noise", "noise+imbalance+target", "noise+imbalance", "average+target")


def _as_tensor(x, name: str, device=None) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.number):
            raise InputError(f"{name} must be a numeric array, got dtype {x.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif torch.is_tensor(x):
        t = x.detach()
    else:
        raise InputError(f"{name} must be a numpy array or a torch tensor of shape (N, C), got {type(x).__name__}")
    if not t.dtype.is_floating_point:
        t = t.double()
    return t if device is None else t.to(device)


def _check_probs(p: torch.Tensor, name: str, shape=None, atol: float = 1e-3) -> None:
    if p.dim() != 2:
        raise InputError(f"{name} must have shape (N, C), got {tuple(p.shape)}")
    if shape is not None and tuple(p.shape) != tuple(shape):
        raise InputError(f"{name} has shape {tuple(p.shape)} but p_noise has {tuple(shape)}; all arrays must be (N, C) for the same samples")
    pf = p.float()
    if not torch.isfinite(pf).all():
        raise InputError(f"{name} has NaN or Inf entries; pass finite probabilities")
    if (pf < 0).any():
        raise InputError(f"{name} has negative entries; pass probabilities (apply softmax to logits)")
    rows = pf.sum(1)
    if len(rows) and (rows - 1).abs().max() > atol:
        raise InputError(
            f"rows of {name} must sum to 1 (worst row sums to {float(rows[(rows - 1).abs().argmax()]):.4g}); "
            "pass probabilities, e.g. softmax of the logits"
        )


def confident_class_sizes(p: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The true class sizes as confident learning estimates them (Northcutt et al., JAIR 2021: the class marginal
    of the calibrated confident joint), from probabilities ``p`` (N, C) and the noisy labels (N,).

    Each class's threshold is the mean probability of that class over the samples labelled with it; a sample is
    counted under (its noisy label, the most probable class whose probability reaches that class's threshold);
    each noisy label's row of counts is rescaled to that label's size, and the column sums are the estimate. The
    per-class thresholds make a tail class that a model predicts with low confidence still count; a noisy label
    with no confident sample keeps its own count. Returns float64 (C,), summing to N."""
    c = p.shape[1]
    pd = p.double()
    labels = labels.to(pd.device).long()
    counts = torch.bincount(labels, minlength=c).double()
    own = pd.gather(1, labels[:, None]).squeeze(1)
    thresh = torch.zeros(c, dtype=pd.dtype, device=pd.device).index_add_(0, labels, own) / counts.clamp_min(1)
    thresh = torch.where(counts > 0, thresh, torch.full_like(thresh, float("inf")))
    above = pd >= thresh[None, :]
    star = torch.where(above, pd, torch.full_like(pd, -1.0)).argmax(1)
    ok = above.any(1)
    joint = torch.zeros(c * c, dtype=pd.dtype, device=pd.device)
    joint.index_add_(0, labels[ok] * c + star[ok], torch.ones(int(ok.sum()), dtype=pd.dtype, device=pd.device))
    joint = joint.view(c, c)
    empty = joint.sum(1) == 0
    joint[empty] = torch.eye(c, dtype=pd.dtype, device=pd.device)[empty]
    joint = joint / joint.sum(1, keepdim=True) * counts[:, None]
    return joint.sum(0)


def class_totals_from(p_imbalance: torch.Tensor, how: str, num_total: float, distributed: bool,
                      p_noise: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Class totals ``t`` (summing to ``num_total``) from one model's probabilities.

    ``soft``: ``sum_i p_imbalance[i]`` (the paper's literal constraint). ``argmax``: counts of its
    predicted classes - closer to the true class sizes when the model's probabilities carry a noise floor.
    ``noise_soft`` / ``noise_argmax``: the same from ``p_noise`` (the noise-robust model's prediction follows the
    training distribution; an imbalance-robust model's prediction is balanced and over-counts the tail).
    ``confident``: confident learning's estimate (:func:`confident_class_sizes`) from the average of both models
    and the noisy ``labels``: it trusts neither model's counts alone, so a class one of them never predicts keeps
    a total.
    """
    if how == "confident":
        if p_noise is None or labels is None:
            raise InputError("class_totals='confident' needs both models' probabilities and the noisy labels")
        if distributed:
            raise InputError("class_totals='confident' needs every row on every process (pass the full arrays)")
        t = confident_class_sizes(0.5 * (p_imbalance.double() + p_noise.double()), labels)
        return t * (num_total / t.sum().clamp_min(1e-300))
    if how.startswith("noise_"):
        if p_noise is None:
            raise InputError(f"class_totals={how!r} needs the noise-robust model's probabilities")
        p_imbalance, how = p_noise, how[len("noise_"):]
    if how == "soft":
        t = p_imbalance.double().sum(0)
    elif how == "argmax":
        t = torch.bincount(p_imbalance.argmax(1), minlength=p_imbalance.shape[1]).double()
    else:
        raise InputError(f"unknown class_totals {how!r}; valid: {', '.join(CLASS_TOTALS)}, or an array of C totals")
    if distributed:
        all_reduce(t)
    return t * (num_total / t.sum().clamp_min(1e-300))


def resolve_class_totals(how: str, scores: dict[str, float] | None) -> str:
    """``how``, with ``auto`` resolved: the predicted-class counts of the auxiliary that the noisy validation split
    supports better (``scores``: class-balanced noisy-validation accuracy by role, ``imbalance`` and ``noise``):
    f_N's (``noise_argmax``) unless f_L scores higher (``argmax``). Which model knows the class sizes depends on
    the regime: an underfitting f_N gives tail classes no total (docs/research/rounds.md, fine-tuning). Without both scores: f_N's."""
    if how != "auto":
        return how
    if not scores or "imbalance" not in scores or "noise" not in scores:
        log.warning("class_totals=auto: the auxiliaries' validation scores are unknown (no validation split, or a "
                    "run stored without them); using f_N's predicted-class counts")
        return "noise_argmax"
    choice = "argmax" if scores["imbalance"] > scores["noise"] else "noise_argmax"
    log.info("class_totals=auto: %s (class-balanced noisy-validation accuracy: f_L %.4f, f_N %.4f)", choice,
             scores["imbalance"], scores["noise"])
    return choice


def _world(distributed: bool | None) -> int:
    return world_size() if distributed is None or distributed else 1


def surrogate_problem(
    p_noise,
    p_imbalance,
    p_target=None,
    *,
    eps: float | None = None,
    class_totals: Any = "soft",
    cost: str = "noise+target",
    dtype=None,
    distributed: bool | None = None,
    labels=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    r"""The entropic OT problem behind :func:`surrogate_labels`, ready for :func:`dsink.ot.sinkhorn`.

    Parameters are those of :func:`surrogate_labels` (same meaning and defaults).

    Returns
    -------
    log_kernel : tensor (N, C)
        Sum of the cost models' log-probabilities divided by ``eps`` (``-inf`` where a probability is 0), in
        ``dtype``, on the device of ``p_noise``. The kernel is ``exp(log_kernel)``; as a cost matrix for
        solvers with kernel ``exp(-M / reg)``: ``M = -eps * log_kernel``, ``reg = eps``.
    a : tensor (N,)
        Row (sample) marginal: ones.
    b : tensor (C,)
        Column (class) marginal: the class totals, scaled to sum to N (over all processes when distributed).
    eps : float
        The regularisation used (the default resolved from ``cost``).

    ``surrogate_labels(...)`` is ``dsink.ot.newton.solve(log_kernel, a, b, eps=eps, ...).plan`` (Newton's
    method or Sinkhorn, same solution).

    Examples
    --------
    >>> import numpy as np
    >>> from dsink.ot import surrogate_problem
    >>> rng = np.random.default_rng(0)
    >>> L, a, b, eps = surrogate_problem(rng.dirichlet(np.ones(3), 5), rng.dirichlet(np.ones(3), 5))
    >>> tuple(L.shape), float(a.sum()), round(float(b.sum()), 6), eps
    ((5, 3), 5.0, 5.0, 2.0)
    """
    pn = _as_tensor(p_noise, "p_noise")
    device = pn.device
    pl = _as_tensor(p_imbalance, "p_imbalance", device)
    _check_probs(pn, "p_noise")
    _check_probs(pl, "p_imbalance", pn.shape)
    pf = None
    if p_target is not None:
        pf = _as_tensor(p_target, "p_target", device)
        _check_probs(pf, "p_target", pn.shape)
    if cost not in COSTS:
        raise InputError(f"unknown cost {cost!r}; valid: {', '.join(COSTS)}")
    if eps is None:  # one unit of entropy per model in the cost: the paper's 2 for f_N and f
        eps = float(cost.count("+") + 1)
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise InputError(f"eps must be a positive number, got {eps!r}")
    if dtype is None:
        dtype = torch.float64 if pn.dtype == torch.float64 else torch.float32
    world = _world(distributed)
    n, c = pn.shape
    n_total = float(all_reduce(torch.tensor(float(n), dtype=torch.float64, device=device)) if world > 1 else n)
    if isinstance(class_totals, str):
        y = None if labels is None else _as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels,
                                                   "labels", device).long().reshape(-1)
        if y is not None and len(y) != n:
            raise InputError(f"labels has {len(y)} entries for {n} rows of probabilities")
        t = class_totals_from(pl, class_totals, n_total, world > 1, p_noise=pn, labels=y)
    else:
        t = _as_tensor(np.asarray(class_totals) if not torch.is_tensor(class_totals) else class_totals,
                       "class_totals", device).double().reshape(-1)
        if t.shape != (c,) or not torch.isfinite(t).all() or (t < 0).any() or t.sum() <= 0:
            raise InputError(f"class_totals must be {c} non-negative finite numbers with a positive sum")
        t = t * (n_total / t.sum())
    # log-kernel (sum of the cost models' log-probabilities) / eps; zeros give -inf (no mass), which the
    # solver handles.
    L = auxiliary_log_terms(pn, pl, t / n_total, cost, dtype)
    with torch.no_grad():
        if pf is not None and cost.endswith("target"):
            L.add_(pf.to(dtype).log())
        L.div_(eps)
    return L, torch.ones(n, dtype=dtype, device=device), t.to(dtype), eps


def auxiliary_log_terms(p_noise: torch.Tensor, p_imbalance: torch.Tensor, prior: torch.Tensor, cost: str,
                        dtype) -> torch.Tensor:
    """The auxiliaries' part of the log-kernel (before the division by ``eps``), a new (N, C) tensor in ``dtype``:
    ``log f_N``, plus ``log f_L^pi`` for the costs holding f_L, or ``log((f_N + f_L^pi) / 2)`` for ``average``;
    ``f_L^pi`` is f_L's balanced posterior moved to the class totals' ``prior`` (its estimate of the training
    posterior). Fixed for a training run: a trainer computes it once and adds f's term at each refresh."""
    with torch.no_grad():
        imb_logits = p_imbalance.to(dtype).log() + prior.clamp_min(1e-300).log().to(dtype)
        if cost.startswith("average"):  # the arithmetic mean of f_N and that f_L: one term
            L = (0.5 * (p_noise.to(dtype) + torch.softmax(imb_logits, dim=1))).log()
        else:
            L = p_noise.to(dtype).log()
        if "imbalance" in cost:
            L.add_(torch.log_softmax(imb_logits, dim=1))
    return L


def surrogate_labels(
    p_noise,
    p_imbalance,
    p_target=None,
    *,
    eps: float | None = None,
    preset: str = "paper",
    class_totals: Any = None,
    cost: str | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    dtype=None,
    distributed: bool | None = None,
    return_result: bool = False,
    init_log_v=None,
    omega: float | None = None,
    solver: str = "auto",
    labels=None,
):
    r"""D-SINK surrogate labels :math:`Q` (N, C) for N samples and C classes.

    Parameters
    ----------
    p_noise : array (N, C)
        Probabilities of the noise-robust model :math:`f_N` (sample-level picture).
    p_imbalance : array (N, C)
        Probabilities of the imbalance-robust model :math:`f_L` (class-level picture); its column sums
        are the class totals (``class_totals="soft"``).
    p_target : array (N, C), optional
        Probabilities of the target model :math:`f`; ``None`` means uniform (the first outer step).
    eps : float, optional
        Entropic regularisation; default: the number of models in the cost (the objective with one KL term
        per model: 2 for the paper's f_N and f). The kernel is the product of the cost models'
        probabilities to the power :math:`1/\varepsilon`.
    preset : "paper" or "dsink"
        Where ``cost`` and ``class_totals`` come from when they are not given: ``paper`` (default: the paper's
        problem, ``cost="noise+target"``, ``class_totals="soft"``) or ``dsink`` (the trainer's default,
        ``cost="average+target"``, ``class_totals="noise_argmax"``). The rest of dsink's default (f_L at its
        selected checkpoint, the guard for classes f_N is blind to, f's averaged probabilities) belongs to
        training: ``method.params.preset`` of ``dsink distill`` sets all of it.
    class_totals : "soft", "argmax", "noise_soft", "noise_argmax", "confident" or array (C,), optional
        How the class totals are taken from ``p_imbalance`` or ``p_noise`` (see :func:`class_totals_from`;
        ``confident`` also needs ``labels``, the noisy labels),
        or the totals. Default: the preset's.
    cost : str, optional
        The models whose KL terms make the cost: ``noise+target`` (the paper: f_N and f), ``noise`` (f_N
        alone), ``noise+imbalance+target`` or ``noise+imbalance`` (also f_L's probabilities moved to the
        class totals' prior, ``softmax(log p_imbalance + log(t / N))``: an imbalance-robust model predicts
        the balanced posterior, and this is its estimate of the training posterior), or ``average+target``
        (one term for the arithmetic mean of f_N and that f_L, one for f: ``kd``'s average, transported).
        Default: the preset's.
    tol, max_iter : float, int
        Solver tolerance on the relative marginal error (default 1e-6 in float64, max(1e-5, 2e-7 sqrt(N)) in float32) and
        iteration cap (see :func:`dsink.ot.sinkhorn`).
    dtype : torch dtype, optional
        Computation dtype; default float64 for float64 inputs, else float32.
    distributed : bool, optional
        Inputs are this process's shard of the samples; class totals and solver sums are all-reduced.
        Default: when ``torch.distributed`` is initialised with more than one process.
    return_result : bool
        Also return the :class:`~dsink.ot.SinkhornResult` (iterations, error, potentials).
    init_log_v : tensor (C,), optional
        Warm start from the class potentials ``log_v`` of an earlier result with the same ``eps`` (e.g. the
        previous refresh's); same solution within ``tol``, usually in far fewer iterations.
    omega : float, optional
        Over-relaxation of the Sinkhorn solver (see :func:`dsink.ot.sinkhorn`): None = automatic, 1 = plain Sinkhorn.
    solver : "auto", "newton" or "sinkhorn"
        ``newton``: Newton's method on the semi-dual (:func:`dsink.ot.semidual_newton`, a handful of passes
        over the kernel); ``sinkhorn``: the scaling iterations (:func:`dsink.ot.sinkhorn`); ``auto`` (default):
        Newton up to ``dsink.ot.newton.NEWTON_MAX_CLASSES`` classes, Sinkhorn beyond. Same problem and solution.
    labels : array (N,) of ints, optional
        The noisy labels; only ``class_totals="confident"`` reads them.

    Returns
    -------
    Q : same kind as ``p_noise`` (numpy array or torch tensor on its device), shape (N, C)
        Rows sum to 1; column sums equal the class totals (within ``tol``).

    Examples
    --------
    >>> import numpy as np
    >>> from dsink import surrogate_labels
    >>> rng = np.random.default_rng(0)
    >>> p_n, p_l = rng.dirichlet(np.ones(3), 5), rng.dirichlet(np.ones(3), 5)
    >>> q = surrogate_labels(p_n, p_l)
    >>> bool(np.allclose(q.sum(1), 1) and np.allclose(q.sum(0), p_l.sum(0), atol=1e-4))
    True
    """
    if solver not in SOLVERS:
        raise InputError(f"unknown solver {solver!r}; valid: {', '.join(SOLVERS)}")
    is_numpy = isinstance(p_noise, np.ndarray)
    if preset not in SURROGATE_PRESETS:
        raise InputError(f"unknown preset {preset!r}; valid: {', '.join(SURROGATE_PRESETS)}")
    cost = SURROGATE_PRESETS[preset]["cost"] if cost is None else cost
    class_totals = SURROGATE_PRESETS[preset]["class_totals"] if class_totals is None else class_totals
    L, a, b, eps = surrogate_problem(p_noise, p_imbalance, p_target, eps=eps, class_totals=class_totals, cost=cost,
                                     dtype=dtype, distributed=distributed, labels=labels)
    with torch.no_grad():
        res = solve(L, a, b, solver=solver, eps=eps, tol=tol, max_iter=max_iter, distributed=_world(distributed) > 1,
                    init_log_v=init_log_v, omega=omega)
    del L
    q = res.plan
    out = q.cpu().numpy() if is_numpy else q
    return (out, res) if return_result else out


__all__ = ["CLASS_TOTALS", "SURROGATE_PRESETS", "SinkhornResult", "auxiliary_log_terms", "class_totals_from",
           "resolve_class_totals", "surrogate_labels", "surrogate_problem"]
