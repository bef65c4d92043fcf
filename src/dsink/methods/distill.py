"""What every distillation of f_L and f_N into one target shares (D-SINK and ``kd``), and ``kd`` itself: the plain
average of f_L and f_N distilled with D-SINK's loss, without the transport step - the rung that isolates what the
optimal transport adds (:mod:`dsink.methods.dsink` makes Q by the transport).

Each batch minimises ``L_Base(f) + alpha * CE_soft(q_i, f(x_i) + log pi)``, ``pi`` = Q's class shares (by default
without ``L_Base``; ``distill=plain``, the paper's, drops ``log pi``). f_L's and f_N's training-set probabilities
come in through the context (``ctx.aux_probs``, resolved from their run directories by :mod:`dsink.train.inputs`);
the methods read no files.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..errors import InputError, check_choice
from ..losses import gce, logit_adjusted_ce, soft_ce
from .base import Method, register_method

log = logging.getLogger(__name__)
BASE_LOSSES = ("none", "ce", "la", "gce")
DISTILL_LOSSES = ("plain", "adjusted")
CALIBRATIONS = ("none", "agreement")
MIN_TEMPERATURE = 0.05  # the sharpest calibration: p ** 20, renormalised (close to the auxiliaries' hard labels)
# which checkpoint of each auxiliary run a distillation reads: both runs' last epoch, both runs' selected checkpoint,
# or f_L's selected checkpoint and f_N's last epoch (imbalance_selected)
AUX_CHECKPOINTS = ("last", "selected", "imbalance_selected")
SELECTED_ROLES = {"last": (), "selected": ("imbalance", "noise"), "imbalance_selected": ("imbalance",)}


@dataclass
class DistillParams:
    """What every distillation from f_L and f_N shares (D-SINK and ``kd``): the two runs, the weight of the
    distillation term and the base loss on the noisy labels."""

    imbalance_run: str = ""  # run directory of f_L
    noise_run: str = ""  # run directory of f_N
    alpha: float = 1.0  # weight of the distillation term
    base_loss: str = "none"  # L_Base: none | ce | la (logit-adjusted CE) | gce (on the noisy labels)
    tau: float = 1.0  # logit-adjustment strength for base_loss=la
    gce_q: float = 0.7  # q for base_loss=gce
    distill: str = "adjusted"  # plain: CE_soft(Q, f) | adjusted: CE_soft(Q, f + log pi), pi = Q's class shares,
    #                         so f's own output is the balanced posterior (logit-adjusted distillation)
    calibrate: str = "none"  # none | agreement: when the auxiliaries' average is less confident (mean max probability)
    #                          than its argmax agrees with the noisy training labels, sharpen both auxiliaries with one
    #                          temperature until it is (never softened; docs/research/regimes.md)
    aux_checkpoint: str = "imbalance_selected"  # the auxiliaries' probabilities from their last epoch | selected
    #                             (the checkpoint their selection rule chose on the noisy validation split, before
    #                             they memorise) | imbalance_selected (f_L's selected checkpoint, f_N's last epoch;
    #                             a run without a validation split gives its last epoch, with a warning)


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(log p / temperature)``: the same argmax, more confident below 1 (zeros stay zeros)."""
    if temperature == 1.0:
        return p
    return torch.softmax(p.double().clamp_min(1e-300).log() / temperature, dim=1).to(p.dtype)


def agreement_temperature(p_imb: torch.Tensor, p_noise: torch.Tensor, labels: torch.Tensor,
                          weight: float = 0.5, steps: int = 40) -> tuple[float, float, float]:
    """The temperature (in [MIN_TEMPERATURE, 1]) at which the average ``weight * f_L + (1 - weight) * f_N`` of the
    sharpened auxiliaries is as confident (mean max probability over the training set) as the unsharpened average's
    argmax agrees with the noisy labels; 1 when it already is. Returns (temperature, confidence, agreement).

    Agreement with noisy labels is a lower bound of accuracy for a model that does not memorise them, so this
    sharpens at most to what the labels certify: it turns correct but flat auxiliaries (short training, tiny data,
    an early-selected checkpoint) into a target signal a student can learn in the epochs it has."""
    avg = weight * p_imb.double() + (1 - weight) * p_noise.double()
    agree = float((avg.argmax(1) == labels.to(avg.device)).double().mean())
    conf = float(avg.max(1).values.mean())
    if conf >= agree:
        return 1.0, conf, agree

    def confidence(t: float) -> float:
        a = weight * sharpen(p_imb.double(), t) + (1 - weight) * sharpen(p_noise.double(), t)
        return float(a.max(1).values.mean())

    lo, hi = MIN_TEMPERATURE, 1.0  # confidence falls as the temperature rises
    if confidence(lo) <= agree:
        return lo, conf, agree
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if confidence(mid) > agree else (lo, mid)
    return hi, conf, agree


class _Distill(Method):
    """A target trained with ``L_Base + alpha * CE_soft(Q, f)`` from f_L's and f_N's saved training-set
    probabilities (``ctx.aux_probs``); subclasses say how Q is made."""

    auxiliaries = {"imbalance": "imbalance_run", "noise": "noise_run"}
    calibrates_later: ClassVar[bool] = False  # True: the subclass calls calibrate_auxiliaries itself

    def __init__(self, params: DistillParams, ctx):
        super().__init__(params, ctx)
        p = params
        check_choice(p.base_loss, BASE_LOSSES, "base loss")
        check_choice(p.distill, DISTILL_LOSSES, "distill")
        check_choice(p.aux_checkpoint, AUX_CHECKPOINTS, "aux_checkpoint")
        check_choice(p.calibrate, CALIBRATIONS, "calibrate")
        if p.alpha < 0:
            raise InputError(f"method.params.alpha must be >= 0, got {p.alpha}")
        if ctx.aux_probs is None:
            raise InputError(f"method {self.name!r} needs the training-set probabilities of its auxiliary runs in its "
                             "context (MethodContext.aux_probs; dsink.train.inputs.method_inputs resolves them)")
        p_imb, p_noise = ctx.aux_probs["imbalance"], ctx.aux_probs["noise"]
        if p_imb.shape != (ctx.num_train, ctx.num_classes) or p_noise.shape != p_imb.shape:
            raise InputError(f"auxiliary predictions have shapes {p_imb.shape} and {p_noise.shape}, the target's training "
                             f"set needs ({ctx.num_train}, {ctx.num_classes}); evaluate the auxiliaries again (dsink eval)")
        self.p_imb = torch.as_tensor(p_imb, device=ctx.device).float()
        self.p_noise = torch.as_tensor(p_noise, device=ctx.device).float()
        self.temperature = 1.0  # of the auxiliaries (calibrate=agreement), fixed by them and the noisy labels
        if p.calibrate == "agreement" and ctx.labels is None:
            raise InputError("calibrate=agreement needs the noisy training labels in the method's context")
        if not self.calibrates_later:
            self.calibrate_auxiliaries()
        self.Q: torch.Tensor | None = None
        self.log_pi: torch.Tensor | None = None  # log of Q's class shares (distill=adjusted)

    def calibrate_auxiliaries(self) -> None:
        """``calibrate=agreement``: sharpen both auxiliaries with the agreement temperature (a no-op otherwise)."""
        if self.p.calibrate != "agreement":
            return
        ctx = self.ctx
        self.temperature, conf, agree = agreement_temperature(self.p_imb, self.p_noise,
                                                              torch.as_tensor(ctx.labels, device=ctx.device))
        log.info("calibrate=agreement: auxiliaries' average confidence %.3f, agreement with the noisy labels %.3f, "
                 "temperature %.3f", conf, agree, self.temperature)
        self.p_imb, self.p_noise = sharpen(self.p_imb, self.temperature), sharpen(self.p_noise, self.temperature)

    def average(self, weight: float = 0.5, rows=slice(None)) -> torch.Tensor:
        """``weight * f_L + (1 - weight) * f_N`` on ``rows`` of the training set: ``kd``'s target (the naive
        average at 0.5), which D-SINK gives the classes f_N is blind to (``blind_vote``)."""
        return weight * self.p_imb[rows] + (1.0 - weight) * self.p_noise[rows]

    def set_target(self, q: torch.Tensor) -> None:
        """Use ``q`` (N, C) as the soft target; its class shares are the prior of the adjusted distillation."""
        self.Q = q.float()
        pi = self.Q.double().mean(0).clamp_min(1e-12)
        self.log_pi = (pi / pi.sum()).log().float()

    def q_disagree(self, labels: torch.Tensor) -> float:
        """The share of training rows whose noisy label is not their soft target's largest entry (logged as
        ``q_disagree``; a label tied with the largest counts as agreeing). The label's entry against the row maximum:
        the same share as ``argmax != label`` for rows without ties, at half the cost of an argmax."""
        return float((self.Q.gather(1, labels[:, None]).squeeze(1) < self.Q.amax(1)).float().mean())

    def label_log_prior(self):
        return self.log_pi if self.p.distill == "adjusted" else None

    def base_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """L_Base on the noisy labels (None for ``base_loss=none``)."""
        p = self.p
        if p.base_loss == "none":
            return None
        if p.base_loss == "ce":
            return F.cross_entropy(logits.float(), y)
        if p.base_loss == "la":
            return logit_adjusted_ce(logits, y, self.log_prior, p.tau)
        return gce(logits, y, p.gce_q)

    def training_step(self, models, x, y, idx, epoch):
        logits = models["net"](x)
        distill = soft_ce(logits, self.Q.index_select(0, idx), self.log_pi if self.p.distill == "adjusted" else None)
        # alpha = 1 and no base loss (the defaults) add nothing: skipping ``0 + 1.0 * distill`` leaves the loss and
        # its gradient bit-identical and saves two ops and their backward nodes per batch
        loss = distill if self.p.alpha == 1.0 else self.p.alpha * distill
        base = self.base_loss(logits, y)
        if base is None:
            base = self._zero
        else:
            loss = base + loss
        return {"loss": loss, "base_loss": base.detach(), "distill_loss": distill.detach(), "logits": logits}

    @functools.cached_property
    def _zero(self) -> torch.Tensor:
        """The logged ``base_loss`` of ``base_loss=none``: one tensor, not one allocation per batch."""
        return torch.zeros((), device=self.ctx.device)


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
        self.set_target(self.average(params.weight))

    def on_epoch_start(self, epoch, trainer):
        if epoch:
            return {}
        return {"q_disagree": self.q_disagree(trainer.train_y),
                "aux_temperature": self.temperature}
