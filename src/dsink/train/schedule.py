"""Learning-rate schedules as pure functions of fractional epoch ``t``, one registry entry each.

``optim.schedule`` names a registered ``f(cfg: OptimConfig, t) -> lr`` (``dsink list schedules``);
:func:`lr_at` applies the warm-up (``optim.warmup_epochs``) common to all of them first.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from ..config import OptimConfig
from ..registry import Registry

Schedule = Callable[[OptimConfig, float], float]
SCHEDULE_REGISTRY: Registry[Schedule] = Registry("schedule")


def register_schedule(name: str, fn: Schedule | None = None, *, description: str = "", **info: Any):
    """Register ``fn(cfg: OptimConfig, t) -> lr`` as ``optim.schedule: name`` (a decorator without ``fn``)."""
    return SCHEDULE_REGISTRY.register(name, fn, description=description, **info)


def list_schedules(filter: str | None = None) -> list[str]:
    """Names of the registered learning-rate schedules, sorted; ``filter``: a shell-style pattern."""
    return SCHEDULE_REGISTRY.list(filter)


def get_schedule(name: str) -> Schedule:
    """A registered schedule; an unknown name is an InputError listing the valid ones."""
    return SCHEDULE_REGISTRY.get(name)


def schedule_info(name: str) -> dict[str, Any]:
    """``name`` and ``description`` of a registered schedule."""
    return SCHEDULE_REGISTRY.info(name)


def lr_at(cfg: OptimConfig, t: float) -> float:
    """Learning rate at fractional epoch ``t`` (0 <= t < epochs): step-wise linear warm-up, then the schedule.

    ``multistep`` multiplies by ``gamma`` at each epoch in ``milestones`` reached;
    ``cosine`` anneals from ``lr`` to 0 over ``epochs``; ``constant`` keeps ``lr``.
    """
    schedule = get_schedule(cfg.schedule)
    if cfg.warmup_epochs > 0 and t < cfg.warmup_epochs:
        # LDAM-DRW / RoLT warm-up: lr * (e + 1) / warmup in epoch e.
        return min(cfg.lr, cfg.lr * (math.floor(t) + 1) / cfg.warmup_epochs)
    return schedule(cfg, t)


@register_schedule("cosine", description="cosine annealing from optim.lr to 0 over optim.epochs")
def _cosine(cfg: OptimConfig, t: float) -> float:
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(t, cfg.epochs) / max(cfg.epochs, 1)))


@register_schedule("multistep", description="optim.lr times optim.gamma at each epoch of optim.milestones reached")
def _multistep(cfg: OptimConfig, t: float) -> float:
    return cfg.lr * cfg.gamma ** sum(t >= m for m in cfg.milestones)


@register_schedule("constant", description="optim.lr throughout")
def _constant(cfg: OptimConfig, t: float) -> float:
    return cfg.lr
