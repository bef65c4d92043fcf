"""D-SINK: distil an imbalance-robust f_L and a noise-robust f_N into the target f via Sinkhorn surrogate labels
(and ``kd``, the same distillation from the plain average of f_L and f_N, without the transport step).

Each refresh (outer step) solves, over the whole training set,
``min_Q sum_i KL(q_i || f_N(x_i)) + KL(q_i || f(x_i))`` with class totals from f_L (SPEC §1);
each batch (inner step) minimises ``L_Base(f) + alpha * CE_soft(q_i, f(x_i))``.
f_L's and f_N's training-set probabilities are read from their run directories (``predictions.npz``).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, TrainingError, check_choice
from ..losses import gce, logit_adjusted_ce, soft_ce
from ..ot.surrogate import CLASS_TOTALS, surrogate_labels
from .base import Method, register_method

log = logging.getLogger(__name__)
BASE_LOSSES = ("none", "ce", "la", "gce")


@dataclass
class DistillParams:
    """What every distillation from f_L and f_N shares (D-SINK and ``kd``): the two runs, the weight of the
    distillation term and the base loss on the noisy labels."""

    imbalance_run: str = ""  # run directory of f_L
    noise_run: str = ""  # run directory of f_N
    alpha: float = 1.0  # weight of the distillation term
    base_loss: str = "ce"  # L_Base: none | ce | la (logit-adjusted CE) | gce (on the noisy labels)
    tau: float = 1.0  # logit-adjustment strength for base_loss=la
    gce_q: float = 0.7  # q for base_loss=gce


@dataclass
class DSinkParams(DistillParams):
    """D-SINK knobs; every choice SPEC §1 leaves open. Defaults and their evidence: docs/dsink.md."""

    class_totals: str = "argmax"  # class totals from f_L: soft (sum of probabilities) | argmax (counts)
    refresh_every: int = 1  # epochs between Sinkhorn refreshes of Q
    target_probs: str = "eval"  # f's probabilities for Q: eval (separate pass) | train (last training pass)
    init: str = "scratch"  # scratch | noise (start f from f_N's weights; same model needed)
    eps: float = 2.0  # entropic regularisation (2 = the paper's objective)
    tol: float = 1e-6  # Sinkhorn tolerance on the relative marginal error
    max_iter: int = 1000  # Sinkhorn iteration cap
    omega: float = 0.0  # Sinkhorn over-relaxation: 0 = adaptive (default), 1 = plain Sinkhorn, (1, 2) fixed
    warm_start: bool = False  # start each refresh from the previous one's class potentials (docs/dsink.md)
    solver_dtype: str = "float64"  # float64 | float32 (float32 halves memory; its error floor is ~sqrt(N)*6e-8)


def load_aux_probs(imbalance_run: str, noise_run: str, fingerprint: str, *,
                   allow_unfinished: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Training-set probabilities of f_L and f_N, read from their finished run directories and checked
    to belong to the target's data (the message names the run whose data differs)."""
    from ..train.rundir import read_eval, read_predictions, require_finished, run_lock

    runs = {"imbalance": imbalance_run, "noise": noise_run}
    for role, run in runs.items():
        if not run:
            raise InputError(f"D-SINK needs method.params.{role}_run: a finished run directory "
                             f"(dsink distill --{role}-run RUN)")
    with contextlib.ExitStack() as stack:
        for run in runs.values():
            stack.enter_context(run_lock(run, shared=True))  # nobody rewrites them while they are read
        fps = {}
        for role, run in runs.items():
            require_finished(run, f"{role} run", allow_unfinished=allow_unfinished,
                             switch="--allow-unfinished (train.allow_unfinished_runs=true)")
            fps[role] = read_eval(run)["data_fingerprint"]
        differ = [role for role, fp in fps.items() if fp != fingerprint]
        if differ == ["imbalance"] or differ == ["noise"]:
            role = differ[0]
            raise InputError(
                f"{role} run {runs[role]!r} was trained on different data (other subsample, noise, split or seed) "
                f"than the target and the other auxiliary; train it again with the same data config")
        if differ:
            same = "share their data" if fps["imbalance"] == fps["noise"] else "differ from each other too"
            raise InputError(
                f"the target's data config differs from both auxiliaries' ({imbalance_run!r} and {noise_run!r} {same}); "
                "drop the data overrides of the target, or train the auxiliaries with the target's data config")
        probs = {role: read_predictions(run)["train_probs"] for role, run in runs.items()}
    return probs["imbalance"], probs["noise"]


class _Distill(Method):
    """A target trained with ``L_Base + alpha * CE_soft(Q, f)`` from f_L's and f_N's saved training-set
    probabilities; subclasses say how Q is made."""

    def __init__(self, params: DistillParams, ctx):
        super().__init__(params, ctx)
        p = params
        check_choice(p.base_loss, BASE_LOSSES, "base loss")
        if p.alpha < 0:
            raise InputError(f"method.params.alpha must be >= 0, got {p.alpha}")
        p_imb, p_noise = load_aux_probs(p.imbalance_run, p.noise_run, ctx.fingerprint,
                                        allow_unfinished=ctx.allow_unfinished_runs)
        if p_imb.shape != (ctx.num_train, ctx.num_classes) or p_noise.shape != p_imb.shape:
            raise InputError(f"auxiliary predictions have shapes {p_imb.shape} and {p_noise.shape}, the target's training "
                             f"set needs ({ctx.num_train}, {ctx.num_classes}); evaluate the auxiliaries again (dsink eval)")
        self.p_imb = torch.as_tensor(p_imb, device=ctx.device).float()
        self.p_noise = torch.as_tensor(p_noise, device=ctx.device).float()
        self.Q: torch.Tensor | None = None

    def base_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """L_Base on the noisy labels."""
        p = self.p
        if p.base_loss == "none":
            return torch.zeros((), device=logits.device)
        if p.base_loss == "ce":
            return F.cross_entropy(logits.float(), y)
        if p.base_loss == "la":
            return logit_adjusted_ce(logits, y, self.log_prior, p.tau)
        return gce(logits, y, p.gce_q)

    def training_step(self, models, x, y, idx, epoch):
        logits = models["net"](x)
        distill = soft_ce(logits, self.Q[idx])
        base = self.base_loss(logits, y)
        return {"loss": base + self.p.alpha * distill, "base_loss": base.detach(), "distill_loss": distill.detach(),
                "logits": logits}


@dataclass
class KDParams(DistillParams):
    """Distillation of the naive average: Q = weight * f_L + (1 - weight) * f_N, fixed."""

    weight: float = 0.5  # share of f_L in Q (the naive average's 0.5)


@register_method
class KD(_Distill):
    """Distil the naive average of f_L and f_N into one model: D-SINK without the transport step, the rung
    that isolates what the optimal transport adds."""

    name = "kd"
    role = "combined"
    description = "distil the average of f_L and f_N into one model (D-SINK without the transport step)"
    Params = KDParams

    def __init__(self, params: KDParams, ctx):
        if not 0.0 <= params.weight <= 1.0:
            raise InputError(f"method.params.weight must be in [0, 1] (the share of f_L), got {params.weight}")
        super().__init__(params, ctx)
        self.Q = params.weight * self.p_imb + (1.0 - params.weight) * self.p_noise

    def on_epoch_start(self, epoch, trainer):
        return {"q_disagree": float((self.Q.argmax(1) != trainer.train_y).float().mean())} if epoch == 0 else {}


@register_method
class DSink(_Distill):
    """Dual-granularity Sinkhorn distillation (Hong et al., arXiv 2510.08179)."""

    name = "dsink"
    role = "target"
    description = "D-SINK: distil f_L (imbalance) and f_N (noise) via Sinkhorn surrogate labels"
    Params = DSinkParams

    def __init__(self, params: DSinkParams, ctx):
        p = params
        check_choice(p.class_totals, CLASS_TOTALS, "class_totals")
        check_choice(p.target_probs, ("eval", "train"), "target_probs")
        check_choice(p.init, ("scratch", "noise"), "init")
        check_choice(p.solver_dtype, ("float64", "float32"), "solver_dtype")
        if p.alpha < 0 or p.refresh_every < 1 or p.eps <= 0:
            raise InputError("D-SINK needs alpha >= 0, refresh_every >= 1 and eps > 0")
        if not 0 <= p.omega < 2 or 0 < p.omega < 1:
            raise InputError(f"method.params.omega must be 0 (adaptive), 1 (plain Sinkhorn) or in (1, 2), got {p.omega}")
        super().__init__(params, ctx)
        self.log_v: torch.Tensor | None = None  # class potentials of the last refresh (warm start)
        self.train_pass = torch.full((ctx.num_train, ctx.num_classes), 1.0 / ctx.num_classes, device=ctx.device)

    def build_models(self, make_model):
        models = super().build_models(make_model)
        if self.p.init == "noise":
            from ..train.checkpoint import load_checkpoint

            state = load_checkpoint(Path(self.p.noise_run) / "checkpoints" / "last.pt")
            first = next(iter(state["models"].values()))
            try:
                models["net"].load_state_dict(first)
            except RuntimeError:
                raise InputError("init=noise needs the target to use the same model as the noise run (model.name/width)") from None
        return models

    def on_epoch_start(self, epoch, trainer):
        if self.Q is not None and epoch % self.p.refresh_every:
            return {}
        from ..train import distributed

        info = distributed.current()
        lo, hi = distributed.row_block(self.ctx.num_train, info)  # this process's rows (all of them alone)
        if self.p.target_probs == "train" and epoch > 0:
            if info.active:
                raise InputError("D-SINK with target_probs=train is single-process; use target_probs=eval under torchrun")
            pf = self.train_pass
        elif epoch == 0 and self.p.init == "scratch":
            pf = None  # an untrained f carries no information: the paper's uniform first step
        else:
            pf = trainer.predict_logits(x=trainer.train_x[lo:hi]).softmax(1)
        q, res = surrogate_labels(self.p_noise[lo:hi], self.p_imb[lo:hi], pf, eps=self.p.eps,
                                  class_totals=self.p.class_totals, tol=self.p.tol, max_iter=self.p.max_iter,
                                  dtype=getattr(torch, self.p.solver_dtype), distributed=info.active,
                                  return_result=True, init_log_v=self.log_v if self.p.warm_start else None,
                                  omega=self.p.omega or None)
        q = distributed.all_gather_rows(q.float(), self.ctx.num_train)  # every process trains on any rows
        if not torch.isfinite(q).all():
            raise TrainingError(f"the Sinkhorn step produced non-finite surrogate labels in epoch {epoch + 1}")
        self.Q = q.float()
        lv = res.log_v.double()
        self.log_v = torch.where(torch.isfinite(lv), lv, torch.zeros_like(lv))  # a class without mass: cold
        disagree = float((self.Q.argmax(1) != trainer.train_y).float().mean())
        return {"sinkhorn_iters": res.iterations, "sinkhorn_error": res.marginal_error, "q_disagree": disagree}

    def training_step(self, models, x, y, idx, epoch):
        out = super().training_step(models, x, y, idx, epoch)
        if self.p.target_probs == "train":
            self.train_pass[idx] = out["logits"].detach().float().softmax(1)
        return out

    def state_dict(self):
        return {"Q": self.Q, "train_pass": self.train_pass, "log_v": self.log_v}

    def load_state_dict(self, state):
        if state.get("Q") is not None:
            self.Q = state["Q"].to(self.ctx.device)
        if state.get("train_pass") is not None:
            self.train_pass = state["train_pass"].to(self.ctx.device)
        if state.get("log_v") is not None:
            self.log_v = state["log_v"].to(self.ctx.device)
