"""Per-epoch metrics to TensorBoard, for watching runs while they train (``train.tensorboard: DIR``).

Each run logs under ``DIR/<run directory name>``, so the models of one ``dsink run`` are the runs of one log
folder (``tensorboard --logdir DIR``). Every numeric field of an epoch's ``metrics.jsonl`` row is a scalar at
that epoch, tagged ``val/...`` (``val_*`` fields), ``test/...`` (``test_*``) or ``train/...`` (the others). A
resumed run drops its events from the resumed epoch on. TensorBoard is not a dependency of dsink: it is imported
only when asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise InputError("train.tensorboard is set but TensorBoard is not installed; install it with pip install "
                         "tensorboard, or drop train.tensorboard") from None
    return SummaryWriter


def require_tensorboard(log_dir: str | None) -> None:
    """An InputError when ``train.tensorboard`` is set and TensorBoard is missing (checked before a run starts)."""
    if log_dir:
        _summary_writer()


def tag(key: str) -> str:
    """The TensorBoard tag of a metrics-row field."""
    for prefix in ("val", "test", "train"):
        if key.startswith(prefix + "_"):
            return f"{prefix}/{key[len(prefix) + 1:]}"
    return f"train/{key}"


class EpochLogger:
    """Writes metrics rows as scalars of one TensorBoard run."""

    def __init__(self, log_dir: str | Path, first_epoch: int = 1):
        self.writer = _summary_writer()(log_dir=str(log_dir), purge_step=first_epoch if first_epoch > 1 else None)

    def log(self, row: dict[str, Any]) -> None:
        """One epoch's row (its ``epoch`` is the step), flushed at once so that TensorBoard shows it live."""
        step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag(key), value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def epoch_logger(log_dir: str | None, run_name: str, first_epoch: int = 1) -> EpochLogger | None:
    """The logger of a run (None when ``train.tensorboard`` is unset); an InputError when TensorBoard is missing."""
    if not log_dir:
        return None
    return EpochLogger(Path(log_dir) / run_name, first_epoch)
