"""Run directories: :class:`RunDir` owns the layout and all of its I/O (status, config, metrics, evaluation,
predictions, a distillation's inputs, checkpoints, the single-writer lock). No other module names a run file."""

from .checkpoint import load_checkpoint, save_checkpoint
from .lock import run_lock
from .rundir import AVERAGE_KIND, RunDir, config_diff

__all__ = ["AVERAGE_KIND", "RunDir", "config_diff", "load_checkpoint", "run_lock", "save_checkpoint"]
