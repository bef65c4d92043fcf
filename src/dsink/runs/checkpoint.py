"""Checkpoints, written atomically (see :mod:`dsink.fileio`); :class:`dsink.runs.RunDir` says where they live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..fileio import atomic_write


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file, fsync, then replace ``path``."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: Path, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {str(path)!r} not found; train the run first (dsink train) or check the path")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a damaged zip/pickle
        raise InputError(
            f"checkpoint {str(path)!r} is corrupt or truncated ({type(e).__name__}); "
            "delete it and resume from another checkpoint, or retrain with --force"
        ) from None
