"""Cross-entropy on the noisy labels: the baseline every method is measured against."""

from __future__ import annotations

import torch.nn.functional as F

from .base import Method, register_method


@register_method
class CrossEntropy(Method):
    """Plain CE on the given (noisy) labels."""

    name = "ce"
    role = "baseline"
    description = "cross-entropy on the noisy labels (no robustness)"

    def training_step(self, models, x, y, idx, epoch):
        logits = models["net"](x)
        return {"loss": F.cross_entropy(logits, y), "logits": logits}
