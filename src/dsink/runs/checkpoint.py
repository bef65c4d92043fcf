"""Checkpoints, written atomically (see :mod:`dsink.fileio`); :class:`dsink.runs.RunDir` says where they live."""

from __future__ import annotations

import contextlib
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
        raise InputError(f"checkpoint {str(path)!r} is corrupt or truncated ({type(e).__name__}); {FIX}") from None


def load_run_checkpoint(path: Path, map_location="cpu") -> dict[str, Any]:
    """:func:`load_checkpoint` of a training checkpoint, checked to hold what the trainer saves."""
    state = load_checkpoint(path, map_location)
    problem = _problem(state)
    if problem:
        raise InputError(f"checkpoint {str(path)!r} is not a dsink checkpoint ({problem}); {FIX}")
    return state


FIX = "delete it and resume from another checkpoint, or retrain with --force"


def _problem(state) -> str:
    """What a loaded checkpoint lacks of what :class:`dsink.train.engine.Trainer` saves ('' when nothing)."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a mapping"
    models = state.get("models")
    if not (isinstance(models, dict) and models and all(isinstance(m, dict) for m in models.values())):
        return "no network weights under 'models'"
    if not (isinstance(state.get("epoch"), int) and state["epoch"] >= 0):
        return "no epoch count"
    if not isinstance(state.get("data_fingerprint"), str):
        return "no data fingerprint"
    return ""


@contextlib.contextmanager
def restoring(path: Path):
    """Turn the errors of loading a checkpoint's state into networks and optimisers (wrong shapes, keys or
    types: a checkpoint edited, or of another model) into an InputError naming the file."""
    try:
        yield
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
        if isinstance(e, InputError):
            raise
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise InputError(f"checkpoint {str(path)!r} does not fit this run's networks or optimiser "
                         f"({type(e).__name__}: {first}); {FIX}") from None
