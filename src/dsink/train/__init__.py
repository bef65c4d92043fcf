"""The training engine, checkpoints and run directories."""

from .api import distill_config, evaluate_run, resolve_config, train_run
from .engine import Trainer, resolve_device

__all__ = ["Trainer", "distill_config", "evaluate_run", "resolve_config", "resolve_device", "train_run"]
