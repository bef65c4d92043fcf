"""Loss functions shared by the methods (pure functions of logits and targets)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy ``-sum_c target_c log softmax(logits)_c`` against soft targets (rows in the simplex)."""
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def logit_adjusted_ce(logits: torch.Tensor, y: torch.Tensor, log_prior: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Logit-adjusted CE (Menon et al., ICLR 2021): ``CE(logits + tau * log prior, y)``.

    With ``tau = 1`` this is the balanced-softmax loss (Ren et al., NeurIPS 2020); ``tau = 0`` is plain CE.
    """
    return F.cross_entropy(logits.float() + tau * log_prior, y)


def gce(logits: torch.Tensor, y: torch.Tensor, q: float = 0.7) -> torch.Tensor:
    """Generalised cross-entropy (Zhang & Sabuncu, NeurIPS 2018): ``(1 - p_y^q) / q``; tends to CE as q -> 0."""
    p_y = F.softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1).clamp_min(1e-12)
    return ((1 - p_y.pow(q)) / q).mean()


def log_prior(class_counts, device) -> torch.Tensor:
    """``log(n_c / n)`` of a class histogram (empty classes get a count of 1 so the log stays finite)."""
    counts = torch.as_tensor(class_counts, dtype=torch.float32, device=device).clamp_min(1)
    return (counts / counts.sum()).log()


__all__ = ["gce", "log_prior", "logit_adjusted_ce", "soft_ce"]
