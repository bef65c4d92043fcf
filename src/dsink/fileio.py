"""Atomic file writes (a crash at any moment leaves the old file or the new one, never half of one) and
the validated readers of the files dsink writes: each raises :class:`~dsink.errors.InputError` naming
the file and how to regenerate it, never a traceback of the parser underneath."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then ``os.replace`` it onto ``path``.

    The file gets the permissions an ``open(path, "w")`` would give it (0666 less the umask), not the
    0600 of a temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode()))


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` leaves when its process is killed mid-write."""
    folder = Path(folder)
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def read_json(path: Path, fix: str) -> dict[str, Any]:
    """A JSON object from ``path``; ``fix`` tells the user how to regenerate the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{str(path)!r} not found; {fix}")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{str(path)!r} is corrupt or truncated ({e}); {fix}") from None
    if not isinstance(data, dict):
        raise InputError(f"{str(path)!r} does not hold a JSON object; {fix}")
    return data


def read_npz(path: Path, fix: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The arrays of an ``.npz`` file (no pickles), checked to hold ``required``."""
    import zipfile
    import zlib

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{str(path)!r} not found; {fix}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, ValueError, OSError) as e:
        if isinstance(e, OSError) and not isinstance(e, zipfile.BadZipFile) and e.errno is not None:
            raise  # an operating-system error (permissions, I/O), not a damaged file
        raise InputError(f"{str(path)!r} is corrupt or truncated ({type(e).__name__}: {e}); {fix}") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise InputError(f"{str(path)!r} lacks {', '.join(missing)}; {fix}")
    return arrays
