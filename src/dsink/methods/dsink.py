"""D-SINK: distil an imbalance-robust f_L and a noise-robust f_N into the target f via Sinkhorn surrogate labels
(the loss, the auxiliaries' inputs and ``kd``, the same distillation without the transport: :mod:`.distill`).

Each refresh (outer step) solves, over the whole training set, ``min_Q sum_i sum_m KL(q_i || p_m(x_i))`` with
fixed class totals ``t``. dsink's default (``preset=dsink``): one KL term for the arithmetic mean of f_N and f_L
moved to the totals' prior, one for f; ``t`` the counts of f_N's predicted classes; the samples of a class f_N is
blind to keep the naive average as their target. The paper's reading (``preset=paper``): f_N and f in the cost,
``t`` = f_L's probability sums (docs/dsink.md#what-is-computed). Each batch (inner step) minimises
``L_Base(f) + alpha * CE_soft(q_i, f(x_i) + log pi)``, ``pi = t / N`` (by default without ``L_Base``;
``distill=plain``, the paper's, drops ``log pi``).
f_L's and f_N's training-set probabilities come in through the context (``ctx.aux_probs``, resolved from their
run directories by :mod:`dsink.train.inputs`); the methods read no files.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError, TrainingError, check_choice
from ..ot.newton import SOLVERS, solve
from ..ot.surrogate import CLASS_TOTALS, COSTS, auxiliary_log_terms, class_totals_from, resolve_class_totals
from .base import register_method
from .distill import DistillParams, _Distill

log = logging.getLogger(__name__)
TRUSTS = ("both", "validated", "collapse")
TRUST_FILLS = ("raw", "prior")
BLIND_RATIO = 0.1  # a model is blind to a class it predicts for fewer than this share of the samples the other
#                    auxiliary predicts there with the noisy label's agreement (blind_vote's default, the health check)
MIN_AGREEING = 5  # ... counted only where the other auxiliary agrees with at least this many noisy labels
TRUST_MARGIN = 0.05  # class-balanced noisy-validation accuracy: the noisy split ranks close models within ~0.01
COLLAPSE_SHARE = 0.25  # trust=collapse: an unfit auxiliary predicts no training sample of at least this share of the
#                        classes (rounded up): a collapse onto the head classes, not one confused class


# The paper's reading of every knob (Hong et al., arXiv 2510.08179, L_Overall; docs/dsink.md#the-papers-reading):
# f_N and f in the cost (eps 2, kernel sqrt(f_N * f)), class totals = f_L's probability sums, plain distillation,
# L_Base = CE on the noisy labels, f's probabilities from a separate evaluation pass every epoch, the auxiliaries'
# last epochs, no guard for blind classes. What the paper leaves open (alpha, how often Q is refreshed, where f
# starts) takes the values below, documented as the preset's choices.
PRESETS: dict[str, dict[str, object]] = {
    "dsink": {},  # dsink's default: the dataclass defaults below
    "paper": {"cost": "noise+target", "eps": 2.0, "class_totals": "soft", "distill": "plain", "base_loss": "ce",
              "alpha": 1.0, "aux_checkpoint": "last", "target_probs": "eval", "target_ema": 0.0, "refresh_every": 1,
              "init": "scratch", "init_lr_scale": 1.0, "init_checkpoint": "last", "blind_vote": 0.0,
              "calibrate": "none", "trust": "both"},
}


@dataclass
class DSinkParams(DistillParams):
    """D-SINK knobs: every choice the method leaves open (docs/dsink.md). ``preset`` names a whole reading:
    ``dsink`` (these defaults) or ``paper`` (:data:`PRESETS`); a knob given beside a preset wins over it."""

    preset: str = "dsink"  # dsink | paper: the values every other knob takes unless it is given
    class_totals: str = "noise_argmax"  # class totals: soft | argmax (f_L's probability sums | predicted-class counts),
    #                               noise_soft | noise_argmax (the same from f_N) | auto (the argmax counts of the
    #                               auxiliary with the higher class-balanced noisy-validation accuracy) | confident
    #                               (confident learning's class sizes from the average of both and the noisy labels)
    cost: str = "average+target"  # models in the transport cost: noise+target (the paper) | noise |
    #                             noise+imbalance+target (f_L shifted to the totals' prior joins the kernel) |
    #                             noise+imbalance | average+target (the arithmetic mean of f_N and that f_L, then f)
    target_ema: float = 0.7  # f's probabilities in the cost: EMA over refreshes with this decay (0 = the live f)
    refresh_every: int = 1  # epochs between Sinkhorn refreshes of Q
    target_probs: str = "train"  # f's probabilities for Q: eval (separate pass) | train (last training pass)
    init: str = "fit"  # scratch | noise (start f from f_N's weights; same model needed) | fit (from f_L's weights
    #                    when trust finds f_N unfit - a different model starts from scratch, with a warning -, else
    #                    from scratch)
    init_lr_scale: float = 0.1  # learning-rate factor of an f started from an auxiliary's weights (init acting): a
    #                             fine-tuning rate (docs/research/regimes.md, candidates 6 and 10)
    init_checkpoint: str = "last"  # last | auxiliary: the auxiliary's checkpoint f starts from - its last epoch, or the
    #                                one whose probabilities D-SINK reads (aux_checkpoint: f_L's selected by default)
    eps: float = 0.0  # entropic regularisation; 0 = one KL term per model in the cost (the paper's 2 for f_N and f)
    blind_vote: float = 0.1  # a class is "blind" when f_N predicts it for fewer than blind_vote x the samples whose
    #                          noisy label f_L agrees with; those samples' rows of Q become the naive average (0: off)
    tol: float = 1e-6  # solver tolerance on the relative marginal error
    max_iter: int = 1000  # solver iteration cap
    solver_dtype: str = "float64"  # float64 | float32 (float32 halves memory; its error floor is ~sqrt(N)*6e-8)
    solver: str = "auto"  # auto (Newton on the semi-dual up to 32 classes, Sinkhorn beyond) | newton | sinkhorn
    trust: str = "collapse"  # both | validated: an auxiliary that is blind to a class the other predicts in
    #                          agreement with its labels AND scores TRUST_MARGIN below the other on the noisy
    #                          validation split is replaced by the other in the totals, the kernel and the guard |
    #                          collapse: the same, only when it also predicts none of a quarter of the classes (a
    #                          collapse onto the head, not one merged class; docs/research/regimes.md, candidate 10)
    trust_margin: float = TRUST_MARGIN  # how far below the other auxiliary (class-balanced noisy-validation accuracy)
    #                                   an unfit auxiliary must score for trust to act (0: any gap; candidate 14)
    trust_fill: str = "raw"  # how the fit auxiliary fills the unfit one's place (trust acting): raw (its own
    #                          probabilities) | prior (moved to the posterior the other estimates: f_L to the noisy
    #                          labels' class shares in f_N's place, f_N to balanced in f_L's; candidates 12, 13)


def expand_preset(params: dict) -> dict:
    """``params`` with its ``preset``'s values beneath the knobs it gives (unknown presets are refused)."""
    name = params.get("preset", "dsink")
    if name not in PRESETS:
        raise InputError(f"unknown method.params.preset {name!r}; valid: {', '.join(PRESETS)} (dsink: the library's "
                         "default; paper: every knob at the paper's reading)")
    return {**PRESETS[name], **params}


def blind_class_mask(probs: torch.Tensor, other: torch.Tensor, labels: torch.Tensor, ratio: float,
                     min_agreeing: int = 1) -> torch.Tensor:
    """(C,) bool: the classes ``probs`` predicts (argmax) for fewer than ``ratio`` times the samples whose noisy label
    ``other``'s argmax agrees with, where at least ``min_agreeing`` samples agree. The one rule behind D-SINK's
    guard (``blind_vote``), the health check and ``trust``; noisy labels and predictions only."""
    c = probs.shape[1]
    labels = labels.to(other.device)
    agree = other.argmax(1) == labels
    n_agree = torch.bincount(labels[agree], minlength=c)
    n_pred = torch.bincount(probs.argmax(1), minlength=c)
    return (n_agree >= min_agreeing) & (n_pred.double() < ratio * n_agree.double())


def blind_classes(probs: np.ndarray, other: np.ndarray, labels: np.ndarray) -> list[int]:
    """The classes ``probs`` is blind to next to ``other`` (:func:`blind_class_mask` with BLIND_RATIO and
    MIN_AGREEING), as indices; numpy inputs (a run's saved predictions)."""
    mask = blind_class_mask(torch.as_tensor(probs), torch.as_tensor(other), torch.as_tensor(labels), BLIND_RATIO,
                            MIN_AGREEING)
    return mask.nonzero().flatten().tolist()


def unpredicted_classes(probs: torch.Tensor) -> int:
    """How many classes ``probs``' argmax gives no row."""
    return int((torch.bincount(probs.argmax(1), minlength=probs.shape[1]) == 0).sum())


def unfit_auxiliary(p_imb: torch.Tensor, p_noise: torch.Tensor, labels: torch.Tensor, scores: dict[str, float] | None,
                    collapse: bool = False, margin: float = TRUST_MARGIN) -> str | None:
    """The role (``imbalance`` or ``noise``) of an auxiliary that is unfit for the data, or None: blind to a class
    the other auxiliary predicts in agreement with its noisy labels (:func:`blind_classes`, the health check's
    rule) and below the other by ``margin`` (TRUST_MARGIN by default) in class-balanced noisy-validation
    accuracy (``scores``; without them nothing is called unfit). With ``collapse`` (``trust=collapse``), it must
    also predict no training sample of at least COLLAPSE_SHARE of the classes (rounded up)."""
    if not scores or scores.get("imbalance") is None or scores.get("noise") is None:
        return None
    need = math.ceil(COLLAPSE_SHARE * p_imb.shape[1]) if collapse else 0
    for role, mine, other, them in (("noise", p_noise, p_imb, "imbalance"), ("imbalance", p_imb, p_noise, "noise")):
        if (scores[role] < scores[them] - margin and unpredicted_classes(mine) >= need
                and blind_class_mask(mine, other, labels, BLIND_RATIO, MIN_AGREEING).any()):
            return role
    return None


def blind_class_rows(p_imb: torch.Tensor, p_noise: torch.Tensor, labels: torch.Tensor, ratio: float) -> torch.Tensor:
    """Rows whose surrogate label should keep f_L's vote because f_N is blind to their class (docs/research/rounds.md,
    eighth round): the classes of :func:`blind_class_mask` (f_N against f_L, ``ratio``); the rows returned are the
    samples of those classes whose noisy label f_L's argmax agrees with. Never true labels."""
    labels = labels.to(p_imb.device)
    blind = blind_class_mask(p_noise, p_imb, labels, ratio)
    return (p_imb.argmax(1) == labels) & blind[labels]


@register_method
class DSink(_Distill):
    """Dual-granularity Sinkhorn distillation (Hong et al., arXiv 2510.08179)."""

    name = "dsink"
    role = "target"
    description = "D-SINK: distil f_L (imbalance) and f_N (noise) via Sinkhorn surrogate labels"
    Params = DSinkParams
    calibrates_later = True  # after trust: a student started from the fit auxiliary is not calibrated for

    @classmethod
    def expand_params(cls, params):
        return expand_preset(params)

    def __init__(self, params: DSinkParams, ctx):
        p = params
        check_choice(p.preset, tuple(PRESETS), "preset")
        check_choice(p.class_totals, CLASS_TOTALS + ("auto",), "class_totals")
        check_choice(p.cost, COSTS, "cost")
        if not 0.0 <= p.target_ema < 1.0:
            raise InputError(f"method.params.target_ema must be in [0, 1), got {p.target_ema}")
        check_choice(p.target_probs, ("eval", "train"), "target_probs")
        check_choice(p.init, ("scratch", "noise", "fit"), "init")
        check_choice(p.solver_dtype, ("float64", "float32"), "solver_dtype")
        check_choice(p.solver, SOLVERS, "solver")
        check_choice(p.trust, TRUSTS, "trust")
        check_choice(p.trust_fill, TRUST_FILLS, "trust_fill")
        check_choice(p.init_checkpoint, ("last", "auxiliary"), "init_checkpoint")
        if not p.init_lr_scale > 0:
            raise InputError(f"method.params.init_lr_scale must be > 0, got {p.init_lr_scale}")
        if p.alpha < 0 or p.refresh_every < 1 or p.eps < 0:
            raise InputError("D-SINK needs alpha >= 0, refresh_every >= 1 and eps >= 0 (0: one per model in the cost)")
        if not 0.0 <= p.trust_margin <= 1.0:
            raise InputError(f"method.params.trust_margin must be in [0, 1] (a gap in class-balanced noisy-validation "
                             f"accuracy), got {p.trust_margin}")
        if not 0.0 <= p.blind_vote <= 1.0:
            raise InputError(f"method.params.blind_vote must be in [0, 1] (0: off; the share of f_L's agreeing samples "
                             f"below which f_N's count makes a class blind), got {p.blind_vote}")
        super().__init__(params, ctx)
        self.unfit = None  # trust=validated|collapse: the auxiliary replaced by the other (fixed by the auxiliaries)
        self.started_from = None  # the auxiliary whose weights f started from (init), if any
        given = self.p_imb, self.p_noise  # class_totals=confident reads both even when trust replaces one
        if p.trust != "both" and ctx.labels is not None:
            self.unfit = unfit_auxiliary(self.p_imb, self.p_noise, torch.as_tensor(ctx.labels), ctx.aux_scores,
                                         collapse=p.trust == "collapse", margin=p.trust_margin)
            if self.unfit is not None:
                names = {"noise": "f_N", "imbalance": "f_L"}
                me, them = names[self.unfit], names["imbalance" if self.unfit == "noise" else "noise"]
                lost = unpredicted_classes(self.p_noise if self.unfit == "noise" else self.p_imb)
                log.warning("trust=%s: %s is blind to a class %s predicts (it predicts %d of the %d classes at all) "
                            "and scores below it on the noisy validation split; D-SINK follows %s alone (totals, "
                            "kernel)", p.trust, me, them, ctx.num_classes - lost, ctx.num_classes, them)
                self._fill_unfit()
        # calibrate=agreement is for a student trained from scratch (docs/research/regimes.md, candidate 8): not for
        # one that init=fit starts from f_L's weights
        if self.unfit == "noise" and p.init == "fit":
            if p.calibrate == "agreement":
                log.info("calibrate=agreement: not applied, f starts from f_L's weights")
        else:
            self.calibrate_auxiliaries()
        # class totals over the whole training set, fixed for the run (every process holds all rows of f_L and f_N)
        how = resolve_class_totals(p.class_totals, ctx.aux_scores)
        p_imb, p_noise = given if how == "confident" else (self.p_imb, self.p_noise)
        self.totals = class_totals_from(p_imb, how, float(ctx.num_train), False, p_noise=p_noise,
                                        labels=None if ctx.labels is None else torch.as_tensor(ctx.labels))
        # the transport's fixed parts: totals scaled as surrogate_problem scales them, eps, the auxiliaries' log-kernel
        self.n_total = float(ctx.num_train)
        self.t = self.totals.double() * (self.n_total / self.totals.double().sum())
        self.eps = float(p.eps) if p.eps else float(p.cost.count("+") + 1)
        self.aux_log: torch.Tensor | None = None  # this process's rows divided by eps, computed at the first refresh
        self.log_v: torch.Tensor | None = None  # the last refresh's column potentials: the next solve starts there
        self.target_avg: torch.Tensor | None = None  # EMA of f's probabilities (target_ema > 0)
        self.train_pass = torch.full((ctx.num_train, ctx.num_classes), 1.0 / ctx.num_classes, device=ctx.device)
        self.seen = torch.zeros(ctx.num_train, dtype=torch.bool, device=ctx.device)  # rows of this epoch's pass
        self.pass_batches: list[tuple[torch.Tensor, torch.Tensor]] = []  # this epoch's (rows, logits), by step
        self.blind_rows: torch.Tensor | None = None  # indices of the rows whose target is the naive average
        self.blind_target: torch.Tensor | None = None  # (blind_vote > 0) and that target

    def _fill_unfit(self) -> None:
        """The unfit auxiliary's place (``self.unfit``) taken by the fit one. ``trust_fill=raw``: its probabilities as
        they are. ``prior``: moved to the posterior the replaced model estimates - f_N, trained on the noisy labels,
        estimates the training posterior, which f_L's logit-adjusted loss fits as ``softmax(log f_L + log prior)``
        with the noisy labels' class shares; f_L is balanced, so f_N in its place is ``softmax(log f_N - log
        prior)``. Raw, f_L's balanced posterior in f_N's place makes the kernel's average half balanced and the
        totals (its argmax counts) over-count the tail; moved by the full log prior, a flat f_L (very short training)
        is sent to the head instead - why ``prior`` is an option, not the default (docs/research/regimes.md,
        candidates 12 and 13)."""
        if self.unfit == "noise":
            fit, sign = self.p_imb, 1.0
        else:
            fit, sign = self.p_noise, -1.0
        if self.p.trust_fill == "prior":
            fit = torch.softmax(fit.clamp_min(1e-30).log() + sign * self.log_prior, dim=1)
        if self.unfit == "noise":
            self.p_noise = fit
        else:
            self.p_imb = fit

    @classmethod
    def init_from(cls, params):
        # init=fit: f_L's weights are read, and used only when f_N turns out unfit (the method decides, once built)
        return {"noise": "noise", "fit": "imbalance"}.get(params.init)

    def build_models(self, make_model):
        models = super().build_models(make_model)
        if self.ctx.init_weights is None:  # no init asked for, or a checkpoint restores the weights
            return models
        if self.p.init == "noise" or (self.p.init == "fit" and self.unfit == "noise"):
            weights = self.ctx.init_weights
            try:
                models["net"].load_state_dict(weights() if callable(weights) else weights)
            except RuntimeError:
                if self.p.init == "fit":  # the default: a target of another model than f_L's starts from scratch
                    log.warning("init=fit: the target's model differs from f_L's, so f starts from scratch "
                                "(same model.name/width needed to start from f_L's weights)")
                    return models
                raise InputError(f"init={self.p.init} needs the target to use the same model as the auxiliary run "
                                 "(model.name/width)") from None
            self.started_from = "imbalance" if self.p.init == "fit" else "noise"
            self.lr_scale = self.p.init_lr_scale
        return models

    def on_epoch_start(self, epoch, trainer):
        """The outer step: class totals (fixed, ``self.totals``), the kernel's models (f_N, f_L and f per ``cost``),
        the transport solved over the whole training set, the guard for classes f_N is blind to, the new target."""
        if self.Q is not None and epoch % self.p.refresh_every:
            return {}
        from .. import distributed

        info = distributed.current()
        lo, hi = distributed.row_block(self.ctx.num_train, info)  # this process's rows (all of them alone)
        pf = self._target_probs(epoch, trainer, lo, hi)
        res = self._solve(self._log_kernel(pf, lo, hi), info.active)
        q = distributed.all_gather_rows(res.plan.float(), self.ctx.num_train)  # every process trains on any rows
        if not torch.isfinite(q.sum(0)).all():  # a NaN or infinite entry makes its column's sum non-finite
            raise TrainingError(f"the Sinkhorn step produced non-finite surrogate labels in epoch {epoch + 1}")
        q, extra = self._guard_blind_classes(q, trainer.train_y)
        self.set_target(q)
        if epoch == 0:
            extra["aux_temperature"] = self.temperature
            extra["unfit_auxiliary"] = {None: 0, "imbalance": 1, "noise": 2}[self.unfit]
        return {"sinkhorn_iters": res.iterations, "sinkhorn_error": res.marginal_error,
                "q_disagree": self.q_disagree(trainer.train_y), **extra}

    def _log_kernel(self, pf: torch.Tensor | None, lo: int, hi: int) -> torch.Tensor:
        """The kernel's log on rows ``lo:hi`` divided by eps (:func:`dsink.ot.surrogate_problem`'s, computed the same
        way): the auxiliaries' part is fixed for the run and computed once; f's term is added at each refresh."""
        dtype = getattr(torch, self.p.solver_dtype)
        if self.aux_log is None:
            self.aux_log = auxiliary_log_terms(self.p_noise[lo:hi], self.p_imb[lo:hi], self.t / self.n_total,
                                               self.p.cost, dtype).div_(self.eps)
        with torch.no_grad():
            if pf is not None and self.p.cost.endswith("target"):
                # f's log in its own (float32) precision, then widened: what float64 would add is below the float32
                # input's own rounding, and torch's float64 log costs about twice as much on the CPU
                # (benchmarks/dsink_cost_parts.py)
                return torch.add(self.aux_log, pf.log().to(dtype), alpha=1.0 / self.eps)
            return self.aux_log.clone()

    def _solve(self, log_kernel: torch.Tensor, distributed: bool):
        """The transport: rows sum to 1, class sums to the totals (Newton's method or Sinkhorn, ``solver``)."""
        with torch.no_grad():
            ones = torch.ones(log_kernel.shape[0], dtype=log_kernel.dtype, device=log_kernel.device)
            # warm start: the kernel moves little between refreshes (f's averaged probabilities), so the last
            # potentials save the solver its scaling pass and most Newton steps (same tolerance, same problem)
            res = solve(log_kernel, ones, self.t.to(log_kernel.dtype), solver=self.p.solver, eps=self.eps,
                        tol=self.p.tol, max_iter=self.p.max_iter, distributed=distributed,
                        init_log_v=self._warm_start(log_kernel.dtype))
            self.log_v = res.log_v
            return res

    def _warm_start(self, dtype) -> torch.Tensor | None:
        """The last refresh's column potentials when they can start this solve (finite on every class with a
        total; a class without one is left at -inf by the solver)."""
        if self.log_v is None or not bool(torch.isfinite(self.log_v[self.t > 0]).all()):
            return None
        return self.log_v.to(dtype)

    def _target_probs(self, epoch, trainer, lo: int, hi: int) -> torch.Tensor | None:
        """f's probabilities on rows ``lo:hi`` for the cost: the last training pass or a separate evaluation pass,
        averaged over the refreshes (``target_ema``); None (uniform) before f has trained."""
        if self.p.target_probs == "train" and epoch > 0:
            pf = self.train_pass[lo:hi]  # merged across processes at the end of each epoch
        elif epoch == 0 and self.started_from is None:
            return None  # an untrained f carries no information: the paper's uniform first step
        else:
            pf = trainer.predict_logits("train", rows=torch.arange(lo, hi)).softmax(1)
        if self.p.target_ema > 0:
            d = self.p.target_ema
            # a copy: pf can be a view of train_pass, which the next epoch overwrites in place (the average would then
            # start one refresh late, and differently under torchrun, where train_pass is rebound at each epoch's end)
            self.target_avg = pf.clone() if self.target_avg is None else d * self.target_avg + (1 - d) * pf
            pf = self.target_avg
        return pf

    def _guard_blind_classes(self, q: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The rows of the classes f_N is blind to keep the naive average as their target (``blind_vote``)."""
        if self.p.blind_vote <= 0:
            return q, {}
        if self.blind_rows is None:  # fixed by the auxiliaries and the noisy labels: found once, its target too
            rows = blind_class_rows(self.p_imb, self.p_noise, labels, self.p.blind_vote)
            self.blind_rows = rows.nonzero().squeeze(1)
            self.blind_target = self.average(rows=self.blind_rows)
        return q.index_put((self.blind_rows,), self.blind_target), {"blind_rows": len(self.blind_rows)}

    def training_step(self, models, x, y, idx, epoch):
        out = super().training_step(models, x, y, idx, epoch)
        if self.p.target_probs == "train":
            # the batch's rows and logits are kept as they are; on_epoch_end writes the epoch's into train_pass at once
            # and turns them into probabilities with one softmax (half the per-step copies' and fills' cost, and no
            # per-batch softmax; benchmarks/dsink_cost_parts.py). Nothing reads train_pass until on_epoch_end.
            self.pass_batches.append((idx, out["logits"].detach()))
        return out

    def _write_training_pass(self) -> None:
        """This epoch's logits into their rows of ``train_pass`` (``seen`` marks the rows): one copy for the epoch,
        or one per step, in step order, when a row came twice (the later step's logits win, as they always have)."""
        if not self.pass_batches:
            return
        rows = torch.cat([r for r, _ in self.pass_batches])
        self.seen.index_fill_(0, rows, True)
        if int(self.seen.sum()) == len(rows):  # every row once (a permutation's batches): one copy
            self.train_pass.index_copy_(0, rows, torch.cat([z for _, z in self.pass_batches]).float())
        else:
            for r, z in self.pass_batches:
                self.train_pass.index_copy_(0, r, z.float())
        self.pass_batches = []

    def on_epoch_end(self, epoch, trainer):
        """The rows of this epoch's training pass become f's probabilities (they hold its logits until now); under
        torchrun each process saw its own share of the pass: merge the rows."""
        from .. import distributed

        if self.p.target_probs != "train":
            return
        self._write_training_pass()
        # row-wise softmax: the same values as the per-batch softmax of the same logits (rows not seen this epoch keep
        # their probabilities)
        if bool(self.seen.all()):  # the usual case: a softmax in place, as four whole-array operations (torch's
            # row-wise softmax kernel costs ~6x more on the CPU at C = 10: 2.4 ms against 0.4 ms on 13,403 rows)
            x = self.train_pass
            x.sub_(x.amax(1, keepdim=True)).exp_()
            x.div_(x.sum(1, keepdim=True))
        else:
            self.train_pass.copy_(torch.where(self.seen[:, None], self.train_pass.softmax(1), self.train_pass))
        if distributed.current().active:
            seen = self.seen.float()[:, None]
            merged = distributed.all_reduce_sum(self.train_pass * seen)
            count = distributed.all_reduce_sum(seen.clone())
            self.train_pass = torch.where(count > 0, merged / count.clamp_min(1), self.train_pass)
        self.seen.zero_()

    def state_dict(self):
        return {"Q": self.Q, "train_pass": self.train_pass, "target_avg": self.target_avg, "log_v": self.log_v}

    def load_state_dict(self, state):
        if state.get("Q") is not None:
            self.set_target(state["Q"].to(self.ctx.device))
        if state.get("target_avg") is not None:
            self.target_avg = state["target_avg"].to(self.ctx.device)
        if state.get("log_v") is not None:
            self.log_v = state["log_v"].to(self.ctx.device)
        if state.get("train_pass") is not None:
            self.train_pass = state["train_pass"].to(self.ctx.device)
