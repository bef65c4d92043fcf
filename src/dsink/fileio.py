"""Atomic file writes (a crash at any moment leaves the old file or the new one, never half of one) and
the validated readers of the files dsink writes: each raises :class:`~dsink.errors.InputError` naming
the file and how to regenerate it, never a traceback of the parser underneath."""

from __future__ import annotations

import contextlib
import errno
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
    with _naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with _naming(path):
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        interrupt = _interrupt_behind(e)
        if interrupt is not None:  # e.g. torch.save's zip writer failing while a SIGTERM unwinds through it
            raise interrupt from None
        raise


def _interrupt_behind(e: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt (Ctrl-C, or SIGTERM raised as one) that ``e`` was raised while handling, if any."""
    seen = e.__context__
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return seen
        seen = seen.__context__
    return None


# what torch.save's zip writer raises when a write underneath it fails (a full disk, quota, an I/O error): it
# swallows the OSError into a RuntimeError such as "unexpected pos 704 vs 598" or "file write failed"
_TORCH_WRITE_FAILURES = ("write failed", "failed writing", "unexpected pos")


@contextlib.contextmanager
def _naming(path: Path):
    """Give an operating-system error raised while writing ``path`` the path it lacks (a failed ``write``
    names no file), and turn torch's RuntimeError for a failed write into the OSError it stands for."""
    try:
        yield
    except OSError as e:
        if e.filename is None or Path(str(e.filename)).name.startswith(f".{path.name}."):  # none, or our temporary
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    except RuntimeError as e:
        behind = _os_error_behind(e)
        if behind is not None:  # torch kept the original error as the context of its own
            raise OSError(behind.errno, behind.strerror or str(behind), str(path)) from e
        if any(s in str(e) for s in _TORCH_WRITE_FAILURES):
            raise OSError(*_write_failure(path), str(path)) from e
        raise


def _os_error_behind(e: BaseException) -> OSError | None:
    """The operating-system error (with an errno) that ``e`` was raised while handling, if any."""
    seen = e.__context__
    while seen is not None and not isinstance(seen, KeyboardInterrupt):
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__context__
    return None


def _write_failure(path: Path) -> tuple[int, str]:
    """(errno, cause) of a write to ``path`` that failed without saying why: a full disk when its file system
    has (almost) no space left, else an I/O error that may still be a quota or a full disk."""
    try:
        st = os.statvfs(path.parent)
        full = st.f_bavail * st.f_frsize < (1 << 20)
    except OSError:
        full = False
    if full:
        return errno.ENOSPC, os.strerror(errno.ENOSPC)
    return errno.EIO, "writing failed (the disk may be full, over quota or failing)"


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (an error names the file)."""
    with _naming(Path(path)), open(path, "a") as f:
        f.write(text)
        f.flush()


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


def read_npz(path: Path, fix: str, required: tuple[str, ...] = (), what: str = "") -> dict[str, Any]:
    """The arrays of an ``.npz`` file, checked to hold ``required``; ``what`` names the file in messages.

    Refused with an :class:`InputError` ending in ``fix``: a missing file, a damaged archive, a plain ``.npy``
    array, and arrays of Python objects (never unpickled). Operating-system errors (permissions, I/O) pass
    through as ``OSError``.
    """
    import zipfile
    import zlib

    import numpy as np

    path = Path(path)
    where = f"{what} {str(path)!r}" if what else repr(str(path))
    if not path.is_file():
        raise InputError(f"{where} not found; {fix}")
    key = None
    try:
        z = np.load(path, allow_pickle=False)
        if not hasattr(z, "files"):
            raise InputError(f"{where} holds a single array, not an .npz archive; {fix}")
        arrays = {}
        with z:
            for key in z.files:
                arrays[key] = z[key]
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, ValueError, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise  # an operating-system error (permissions, I/O), not a damaged file
        if isinstance(e, ValueError) and "allow_pickle" in str(e) and key is not None:  # an object array inside
            raise InputError(f"{where}: array {key!r} holds Python objects (dtype object), which are not loaded for "
                             f"safety; store numbers and integer class indices instead; {fix}") from None
        raise InputError(f"{where} cannot be read: corrupt or truncated ({type(e).__name__}: {e}); {fix}") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise InputError(f"{where} lacks {', '.join(missing)}; {fix}")
    return arrays
