"""Noise-robust methods (f_N)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..losses import gce, sce
from .base import Method, register_method


@dataclass
class GCEParams:
    """Generalised cross-entropy (Zhang & Sabuncu, NeurIPS 2018): canonical q = 0.7 (docs/reference.md#models-and-methods)."""

    q: float = 0.7


@register_method
class GeneralizedCE(Method):
    """GCE loss ``(1 - p_y^q) / q`` on the noisy labels."""

    name = "gce"
    role = "noise"
    description = "generalised cross-entropy (Zhang & Sabuncu 2018), q=0.7"
    Params = GCEParams

    def training_step(self, models, x, y, idx, epoch):
        logits = models["net"](x)
        return {"loss": gce(logits, y, self.p.q), "logits": logits}


@dataclass
class SCEParams:
    """Symmetric CE (Wang et al., ICCV 2019): canonical alpha = 0.1, beta = 1.0 for CIFAR-10 (docs/reference.md#models-and-methods)."""

    alpha: float = 0.1
    beta: float = 1.0


@register_method
class SymmetricCE(Method):
    """``alpha * CE + beta * reverse CE`` on the noisy labels."""

    name = "sce"
    role = "noise"
    description = "symmetric cross-entropy (Wang et al. 2019), alpha=0.1, beta=1"
    Params = SCEParams

    def training_step(self, models, x, y, idx, epoch):
        logits = models["net"](x)
        return {"loss": sce(logits, y, self.p.alpha, self.p.beta), "logits": logits}


@dataclass
class CoTeachingParams:
    """Co-teaching (Han et al., NeurIPS 2018): forget rate = the noise rate (``forget_rate: null``),
    reached linearly over ``ramp_epochs`` = 10 (docs/reference.md#models-and-methods)."""

    forget_rate: float | None = None
    ramp_epochs: int = 10


def average_logits(models, x) -> torch.Tensor:
    """Log of the mean of the networks' softmax outputs: the saved prediction of two-network methods."""
    probs = torch.stack([m(x).float().softmax(1) for m in models.values()]).mean(0)
    return probs.clamp_min(1e-12).log()


class _CoTeachingBase(Method):
    """Two networks; each is updated on the samples its peer finds small-loss."""

    def build_models(self, make_model):
        return {"net": make_model(), "peer": make_model()}

    def forget_rate(self, epoch: int) -> float:
        """Scheduled share of each batch dropped in ``epoch`` (0-based)."""
        rate = self.ctx.noise_rate if self.p.forget_rate is None else self.p.forget_rate
        return rate * min(1.0, epoch / max(self.p.ramp_epochs, 1))

    def per_sample_loss(self, logits, y):
        return F.cross_entropy(logits.float(), y, reduction="none")

    def training_step(self, models, x, y, idx, epoch):
        a, b = models["net"](x), models["peer"](x)
        la, lb = self.per_sample_loss(a, y), self.per_sample_loss(b, y)
        keep = len(y) - int(round(self.forget_rate(epoch) * len(y)))
        keep = max(keep, 1)
        sel_a = torch.argsort(la.detach())[:keep]  # small-loss samples of net train its peer, and back
        sel_b = torch.argsort(lb.detach())[:keep]
        loss = la[sel_b].mean() + lb[sel_a].mean()
        return {"loss": loss, "logits": a, "kept": torch.tensor(keep / len(y))}

    def predict_logits(self, models, x):
        return average_logits(models, x)


@register_method
class CoTeaching(_CoTeachingBase):
    """Co-teaching with CE; the saved prediction averages the two networks' probabilities."""

    name = "coteaching"
    role = "noise"
    description = "co-teaching (Han et al. 2018): two networks exchange small-loss samples"
    Params = CoTeachingParams


@dataclass
class ELRParams:
    """Early-learning regularisation (Liu et al., NeurIPS 2020): lambda = 3, beta = 0.7 for CIFAR-10 (docs/reference.md#models-and-methods)."""

    lam: float = 3.0
    beta: float = 0.7


@register_method
class ELR(Method):
    """CE plus ``lam * log(1 - <t_i, p_i>)`` with per-sample targets ``t_i`` = EMA (beta) of the predictions."""

    name = "elr"
    role = "noise"
    description = "early-learning regularisation (Liu et al. 2020), lambda=3, beta=0.7"
    Params = ELRParams

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.targets = torch.zeros(ctx.num_train, ctx.num_classes, device=ctx.device)
        self.touched = torch.zeros(ctx.num_train, device=ctx.device)

    def training_step(self, models, x, y, idx, epoch):
        logits = models["net"](x)
        p = logits.float().softmax(1).clamp(1e-4, 1 - 1e-4)
        with torch.no_grad():
            q = p / p.sum(1, keepdim=True)
            self.targets[idx] = self.p.beta * self.targets[idx] + (1 - self.p.beta) * q
            self.touched[idx] = 1.0
        reg = torch.log(1 - (self.targets[idx] * p).sum(1)).mean()
        return {"loss": F.cross_entropy(logits.float(), y) + self.p.lam * reg, "logits": logits, "elr_reg": reg.detach()}

    def on_epoch_end(self, epoch, trainer):
        """Under torchrun each sample's target was updated by the one process that saw it: share it."""
        from .. import distributed

        if distributed.current().active:
            summed = distributed.all_reduce_sum(self.targets * self.touched[:, None])
            count = distributed.all_reduce_sum(self.touched.clone())
            seen = count > 0
            self.targets[seen] = summed[seen] / count[seen, None]
        self.touched.zero_()

    def state_dict(self):
        return {"targets": self.targets}

    def load_state_dict(self, state):
        if "targets" in state:
            self.targets = state["targets"].to(self.ctx.device)
