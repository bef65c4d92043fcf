"""Loss functions shared by the methods (pure functions of logits and targets)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_ce(logits: torch.Tensor, target: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy ``-sum_c target_c log softmax(logits + shift)_c`` against soft targets (rows in the
    simplex); ``shift`` (C,), optional, is added to the float32 logits (a logit adjustment).

    torch's ``cross_entropy`` with class-probability targets: the gradient of the plain expression
    ``-(target * log_softmax(z)).sum(1).mean()`` bit for bit and its loss to float32's last bit
    (tests/methods/test_losses.py), and the cheapest of the forms measured on the CPU (about 25 us per step under a
    custom one-node autograd function at 10 classes, which pays Python's dispatch twice per step;
    benchmarks/dsink_cost_parts.py)."""
    z = logits.float()
    return F.cross_entropy(z if shift is None else z + shift, target.to(z.dtype))


def logit_adjusted_ce(logits: torch.Tensor, y: torch.Tensor, log_prior: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Logit-adjusted CE (Menon et al., ICLR 2021): ``CE(logits + tau * log prior, y)``.

    With ``tau = 1`` this is the balanced-softmax loss (Ren et al., NeurIPS 2020); ``tau = 0`` is plain CE.
    """
    return F.cross_entropy(logits.float() + tau * log_prior, y)


def gce(logits: torch.Tensor, y: torch.Tensor, q: float = 0.7) -> torch.Tensor:
    """Generalised cross-entropy (Zhang & Sabuncu, NeurIPS 2018): ``(1 - p_y^q) / q``; tends to CE as q -> 0."""
    p_y = F.softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1).clamp_min(1e-12)
    return ((1 - p_y.pow(q)) / q).mean()


def sce(logits: torch.Tensor, y: torch.Tensor, alpha: float = 0.1, beta: float = 1.0, clip: float = 1e-4) -> torch.Tensor:
    """Symmetric CE (Wang et al., ICCV 2019): ``alpha * CE + beta * RCE``.

    The reverse term ``RCE = -sum_k p_k log onehot_k`` with the one-hot clipped to ``[clip, 1]``
    equals ``-log(clip) * (1 - p_y)``.
    """
    ce = F.cross_entropy(logits.float(), y)
    p_y = F.softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)
    rce = (-torch.log(torch.tensor(clip)) * (1 - p_y)).mean()
    return alpha * ce + beta * rce


def ldam_margins(class_counts, max_margin: float = 0.5) -> torch.Tensor:
    """LDAM margins (Cao et al., NeurIPS 2019): ``Delta_c proportional to n_c^(-1/4)``, the largest equal to ``max_margin``."""
    n = torch.as_tensor(class_counts, dtype=torch.float64).clamp_min(1)
    m = n.pow(-0.25)
    return (m * (max_margin / m.max())).float()


def ldam_loss(logits: torch.Tensor, y: torch.Tensor, margins: torch.Tensor, s: float = 30.0,
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """LDAM: CE on ``s * (logits - Delta_y * onehot_y)``; ``logits`` are cosine similarities (normalised head)."""
    shifted = logits.float() - F.one_hot(y, logits.shape[1]).float() * margins[y][:, None]
    return F.cross_entropy(s * shifted, y, weight=weight)


def class_balanced_weights(class_counts, beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights (Cui et al., CVPR 2019): ``(1 - beta) / (1 - beta^n_c)``, normalised to sum to C."""
    n = torch.as_tensor(class_counts, dtype=torch.float64).clamp_min(1)
    w = (1 - beta) / (1 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))
    return (w * (len(n) / w.sum())).float()


def log_prior(class_counts, device) -> torch.Tensor:
    """``log(n_c / n)`` of a class histogram (empty classes get a count of 1 so the log stays finite)."""
    counts = torch.as_tensor(class_counts, dtype=torch.float32, device=device).clamp_min(1)
    return (counts / counts.sum()).log()


__all__ = ["class_balanced_weights", "gce", "ldam_loss", "ldam_margins", "log_prior", "logit_adjusted_ce", "sce", "soft_ce"]
