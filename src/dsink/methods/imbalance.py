"""Imbalance-robust methods (f_L). Their saved prediction is the balanced posterior (softmax of the raw logits)."""

from __future__ import annotations

from dataclasses import dataclass

from ..losses import log_prior, logit_adjusted_ce
from .base import Method, register_method


@dataclass
class LAParams:
    """Logit adjustment (Menon et al., ICLR 2021): canonical tau = 1 (SPEC §2)."""

    tau: float = 1.0


@register_method
class LogitAdjusted(Method):
    """Logit-adjusted CE with the prior of the noisy training labels.

    Training shifts the logits by ``tau * log prior``; the saved prediction is the unshifted
    softmax, i.e. the balanced posterior.
    """

    name = "la"
    role = "imbalance"
    description = "logit-adjusted cross-entropy (Menon et al. 2021), tau=1"
    Params = LAParams

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.log_prior = log_prior(ctx.class_counts, ctx.device)

    def training_step(self, models, x, y, idx, epoch):
        logits = models["net"](x)
        return {"loss": logit_adjusted_ce(logits, y, self.log_prior, self.p.tau), "logits": logits}
