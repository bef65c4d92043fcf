"""Imbalance-robust methods (f_L). Their saved prediction is the balanced posterior (softmax of the raw logits)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..losses import class_balanced_weights, ldam_loss, ldam_margins, logit_adjusted_ce
from .base import Method, NoParams, register_method


@dataclass
class LAParams:
    """Logit adjustment (Menon et al., ICLR 2021): canonical tau = 1 (docs/reference.md#models-and-methods)."""

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

    def training_step(self, models, x, y, idx, epoch):
        logits = models["net"](x)
        return {"loss": logit_adjusted_ce(logits, y, self.log_prior, self.tau), "logits": logits}

    def label_log_prior(self):
        return self.tau * self.log_prior

    @property
    def tau(self) -> float:
        """Logit-adjustment strength."""
        return self.p.tau


@register_method
class BalancedSoftmax(LogitAdjusted):
    """Balanced softmax (Ren et al., NeurIPS 2020): CE on logits shifted by the log class prior.

    It is the logit-adjusted loss with tau fixed at 1; the saved prediction is the unshifted softmax.
    """

    name = "bs"
    role = "imbalance"
    description = "balanced softmax (Ren et al. 2020): CE on logits + log prior"
    Params = NoParams
    tau = 1.0


@register_method
class PostHocLA(Method):
    """Post-hoc logit adjustment (Menon et al., ICLR 2021): train with CE, predict ``logits - tau * log prior``."""

    name = "la_posthoc"
    role = "imbalance"
    description = "CE training, post-hoc logit adjustment of the prediction (Menon et al. 2021), tau=1"
    Params = LAParams

    def training_step(self, models, x, y, idx, epoch):
        logits = models["net"](x)
        return {"loss": F.cross_entropy(logits.float(), y), "logits": logits}

    def predict_logits(self, models, x):
        return models["net"](x).float() - self.p.tau * self.log_prior

    def label_log_prior(self):
        return self.p.tau * self.log_prior


@dataclass
class DRWParams:
    """Deferred re-weighting (Cao et al., NeurIPS 2019): class-balanced weights (beta 0.9999) from
    ``drw_start`` x epochs on (160 of 200 in the LDAM-DRW recipe)."""

    beta: float = 0.9999
    drw_start: float = 0.8


def _drw_weight(p, ctx, epoch):
    if epoch >= int(p.drw_start * ctx.epochs):
        return class_balanced_weights(ctx.class_counts, p.beta).to(ctx.device)
    return None


@register_method
class ClassBalancedDRW(Method):
    """CE with class-balanced re-weighting deferred to the last part of training (CB-DRW)."""

    name = "cb_drw"
    role = "imbalance"
    description = "CE with deferred class-balanced re-weighting (Cui et al. 2019; Cao et al. 2019)"
    Params = DRWParams

    def training_step(self, models, x, y, idx, epoch):
        logits = models["net"](x)
        w = _drw_weight(self.p, self.ctx, epoch)
        return {"loss": F.cross_entropy(logits.float(), y, weight=w), "logits": logits}


@register_method
class DeferredResampling(Method):
    """CE with class-balanced re-sampling deferred to the last part of training (DRS, Cao et al. 2019).

    Before ``drw_start`` x epochs an epoch is a random permutation; from then on it is as many draws
    (with replacement) as there are training samples, sample i drawn with probability proportional to
    the class-balanced weight (effective number, ``beta``) of its noisy label.
    """

    name = "cb_drs"
    role = "imbalance"
    description = "CE with deferred class-balanced re-sampling (Cao et al. 2019, DRS)"
    Params = DRWParams

    def sample_indices(self, epoch, labels, gen):
        if epoch < int(self.p.drw_start * self.ctx.epochs):
            return None
        w = class_balanced_weights(self.ctx.class_counts, self.p.beta).double()[labels]
        return torch.multinomial(w, len(labels), replacement=True, generator=gen)

    def training_step(self, models, x, y, idx, epoch):
        logits = models["net"](x)
        return {"loss": F.cross_entropy(logits.float(), y), "logits": logits}


class NormedLinear(nn.Module):
    """Cosine-similarity head used by LDAM: ``normalize(x) @ normalize(W)``."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5))

    @property
    def out_features(self) -> int:
        return self.weight.shape[1]

    def forward(self, x):
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)


@dataclass
class LDAMParams:
    """LDAM-DRW (Cao et al., NeurIPS 2019): max margin 0.5, scale s = 30, DRW as in :class:`DRWParams`."""

    max_margin: float = 0.5
    s: float = 30.0
    beta: float = 0.9999
    drw_start: float = 0.8


@register_method
class LDAMDRW(Method):
    """Label-distribution-aware margin loss with deferred re-weighting, on a normalised (cosine) head.

    The saved prediction is the softmax of ``s * cosine`` (no margin at test time).
    """

    name = "ldam_drw"
    role = "imbalance"
    description = "LDAM margins n^(-1/4) with deferred re-weighting (Cao et al. 2019)"
    Params = LDAMParams

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.margins = ldam_margins(ctx.class_counts, params.max_margin).to(ctx.device)

    def build_models(self, make_model):
        net = make_model()
        net.fc = NormedLinear(net.fc.in_features, net.fc.out_features).to(self.ctx.device)
        return {"net": net}

    def training_step(self, models, x, y, idx, epoch):
        logits = models["net"](x)
        w = _drw_weight(self.p, self.ctx, epoch)
        return {"loss": ldam_loss(logits, y, self.margins, self.p.s, w), "logits": logits}

    def predict_logits(self, models, x):
        return self.p.s * models["net"](x).float()
