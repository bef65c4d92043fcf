"""The single-writer lock of a run directory.

One process at a time writes a run directory: it holds an exclusive ``flock`` on ``RUN/.lock``, which the
kernel releases when the process ends, however it ends, so a lock left by a dead process never blocks anyone.
Readers of a run (distillation, averaging, audits) take a shared lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from ..errors import InputError

log = logging.getLogger(__name__)
LOCK_NAME = ".lock"
_HELD: dict[str, bool] = {}  # run directories this process holds a lock on -> whether it is exclusive


def lock_holder(run_dir: str | Path) -> str:
    """The process that holds (or, when nobody does, last held) the lock, as the lock file describes it; empty
    when the file names none."""
    holder = _holder(Path(run_dir))
    return "" if holder == "another process" else holder


def _holder(run_dir: Path) -> str:
    try:
        h = json.loads((run_dir / LOCK_NAME).read_text())
        return f"process {h['pid']} on {h['host']} ({h['command']}, since {h['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _acquire(fd: int, run_dir: Path, shared: bool, wait: bool, poll_s: float,
             on_wait: Callable[[str], None] | None, busy_hint: str) -> None:
    """Take the flock on ``fd``, waiting (``wait``) or refusing with an InputError naming the holder and
    ending in ``busy_hint``."""
    told = False
    while True:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = _holder(run_dir)
            if not wait:
                raise InputError(f"run {str(run_dir)!r} is in use by {holder}; {busy_hint}") from None
            if not told:
                log.warning("run %s is in use by %s; waiting for it", run_dir, holder)
                if on_wait is not None:
                    on_wait(holder)
                told = True
            time.sleep(poll_s)


@contextlib.contextmanager
def run_lock(run_dir: str | Path, *, shared: bool = False, wait: bool = False, poll_s: float = 1.0,
             on_wait: Callable[[str], None] | None = None, busy_hint: str | None = None) -> Iterator[None]:
    """Hold the lock of ``run_dir`` (creating the folder): exclusive for writers, ``shared`` for readers.

    When another process holds it, wait (``wait``; ``on_wait(holder)`` is called once) or raise an
    :class:`InputError` naming the holder and ending in ``busy_hint`` (default: wait, and for a writer, which
    the training commands are, choose another --out; a command without --out passes its own). Re-entrant within one process. A reader on storage where the
    lock file cannot be created (read-only media) reads without a lock: nobody can write there either.
    """
    run_dir = Path(run_dir)
    key = str(run_dir.resolve())
    if key in _HELD:  # re-entrant (a shared lock taken inside an exclusive one is already covered)
        if not shared and not _HELD[key]:
            raise RuntimeError(f"cannot upgrade the shared lock of {run_dir} to an exclusive one")
        yield
        return
    if not shared:
        run_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        if shared:
            yield
            return
        raise
    try:
        if busy_hint is None:
            busy_hint = "wait until it ends" + ("" if shared else ", or choose another --out")
        _acquire(fd, run_dir, shared, wait, poll_s, on_wait, busy_hint)
        if not shared:
            info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])[:200]}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        _HELD[key] = not shared
        try:
            yield
        finally:
            del _HELD[key]
            if not shared:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)  # an idle lock file is empty; a killed holder's details stay, unlocked
    finally:
        os.close(fd)  # releases the lock


def is_locked(run_dir: str | Path) -> bool:
    """True when a process (this one included) holds the exclusive lock of ``run_dir``."""
    run_dir = Path(run_dir)
    key = str(run_dir.resolve())
    if key in _HELD:  # while this process holds a shared lock, nobody holds the exclusive one
        return _HELD[key]
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
