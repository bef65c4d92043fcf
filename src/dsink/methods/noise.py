"""Noise-robust methods (f_N)."""

from __future__ import annotations

from dataclasses import dataclass

from ..losses import gce
from .base import Method, register_method


@dataclass
class GCEParams:
    """Generalised cross-entropy (Zhang & Sabuncu, NeurIPS 2018): canonical q = 0.7 (SPEC §2)."""

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
