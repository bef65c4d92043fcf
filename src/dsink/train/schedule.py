"""Learning-rate schedules as pure functions of fractional epoch ``t``."""

from __future__ import annotations

import math

from ..config import OptimConfig
from ..errors import check_choice

SCHEDULES = ("cosine", "multistep", "constant")


def lr_at(cfg: OptimConfig, t: float) -> float:
    """Learning rate at fractional epoch ``t`` (0 <= t < epochs): step-wise linear warm-up, then the schedule.

    ``multistep`` multiplies by ``gamma`` at each epoch in ``milestones`` reached;
    ``cosine`` anneals from ``lr`` to 0 over ``epochs``.
    """
    check_choice(cfg.schedule, SCHEDULES, "schedule")
    if cfg.warmup_epochs > 0 and t < cfg.warmup_epochs:
        # LDAM-DRW / RoLT warm-up: lr * (e + 1) / warmup in epoch e.
        return min(cfg.lr, cfg.lr * (math.floor(t) + 1) / cfg.warmup_epochs)
    if cfg.schedule == "multistep":
        return cfg.lr * cfg.gamma ** sum(t >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(t, cfg.epochs) / max(cfg.epochs, 1)))
    return cfg.lr
