"""Atomic file writes and checkpoints: a crash at any moment leaves the old file or the new one, never half."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace``."""
    _atomic(path, lambda f: f.write(text.encode()))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    _atomic(path, lambda f: f.write(data))


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file, fsync, then replace ``path``."""
    _atomic(path, lambda f: torch.save(obj, f))


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
