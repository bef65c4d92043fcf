"""The optimiser registry: ``optim.optimizer`` names one of these factories (``dsink list optimizers``).

A factory takes the parameters to train and the run's :class:`~dsink.config.OptimConfig` and returns a
``torch.optim.Optimizer`` at learning rate ``optim.lr`` (the schedule, :mod:`.schedule`, sets it per step).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from ..config import OptimConfig
from ..registry import Registry

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter], OptimConfig], torch.optim.Optimizer]
OPTIMIZER_REGISTRY: Registry[OptimizerFactory] = Registry("optimizer")


def register_optimizer(name: str, factory: OptimizerFactory | None = None, *, description: str = "", **info: Any):
    """Register ``factory(params, cfg: OptimConfig) -> Optimizer`` as ``optim.optimizer: name``
    (a decorator without ``factory``)."""
    return OPTIMIZER_REGISTRY.register(name, factory, description=description, **info)


def list_optimizers(filter: str | None = None) -> list[str]:
    """Names of the registered optimisers, sorted; ``filter``: a shell-style pattern."""
    return OPTIMIZER_REGISTRY.list(filter)


def get_optimizer(name: str) -> OptimizerFactory:
    """The factory of a registered optimiser; an unknown name is an InputError listing the valid ones."""
    return OPTIMIZER_REGISTRY.get(name)


def optimizer_info(name: str) -> dict[str, Any]:
    """``name`` and ``description`` of a registered optimiser."""
    return OPTIMIZER_REGISTRY.info(name)


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` over ``params``."""
    return get_optimizer(cfg.optimizer)(params, cfg)


@register_optimizer("sgd", description="SGD with optim.momentum (optim.nesterov) and L2 optim.weight_decay")
def _sgd(params, o: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)


@register_optimizer("adam", description="Adam with L2 optim.weight_decay (optim.momentum is not used)")
def _adam(params, o: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)


@register_optimizer("adamw", description="AdamW with decoupled optim.weight_decay (optim.momentum is not used)")
def _adamw(params, o: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
