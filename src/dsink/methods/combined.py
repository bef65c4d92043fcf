"""Naive combinations of an imbalance-robust and a noise-robust technique: the baselines D-SINK claims to beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..losses import gce
from .base import Method, register_method
from .noise import CoTeachingParams, _CoTeachingBase


@dataclass
class CoTeachingLAParams(CoTeachingParams):
    """Co-teaching defaults plus the logit-adjustment strength tau = 1."""

    tau: float = 1.0


@register_method
class CoTeachingLA(_CoTeachingBase):
    """Co-teaching whose per-sample loss (for ranking and training) is logit-adjusted CE."""

    name = "coteaching_la"
    role = "combined"
    description = "co-teaching trained with logit-adjusted CE (naive combination)"
    Params = CoTeachingLAParams

    def per_sample_loss(self, logits, y):
        return F.cross_entropy(logits.float() + self.p.tau * self.log_prior, y, reduction="none")


@dataclass
class GCEBSParams:
    """GCE's q = 0.7 on balanced-softmax logits."""

    q: float = 0.7


@register_method
class GCEBalancedSoftmax(Method):
    """GCE on logits shifted by the log prior (balanced softmax); the prediction is the unshifted softmax."""

    name = "gce_bs"
    role = "combined"
    description = "GCE on balanced-softmax logits (naive combination)"
    Params = GCEBSParams

    def training_step(self, models, x, y, idx, epoch):
        logits = models["net"](x)
        return {"loss": gce(logits.float() + self.log_prior, y, self.p.q), "logits": logits}
