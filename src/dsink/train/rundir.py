"""Run directories: ``config.yaml``, ``run.json``, ``metrics.jsonl``, ``checkpoints/{last,best}.pt``,
``eval.json``, ``predictions.npz`` - enough to resume, evaluate and report from the folder alone.

One process at a time writes a run directory: it holds an exclusive ``flock`` on ``RUN/.lock`` (see
:func:`run_lock`), which the kernel releases when the process ends, however it ends, so a lock left by a
dead process never blocks anyone. Readers of a run (distillation, averaging, audits) take a shared lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import __version__
from ..config import RunConfig, load_config, save_config
from ..errors import InputError
from ..fileio import atomic_write_text, read_json, read_npz

log = logging.getLogger(__name__)
LOCK_NAME = ".lock"
AVERAGE_KIND = "average"  # run.json "kind" of an average run (dsink average)
_HELD: dict[str, bool] = {}  # run directories this process holds a lock on -> whether it is exclusive

# Keys that change how a run executes, not what it computes: they may differ on resume.
EXECUTION_KEYS = {"train.device", "train.num_threads", "train.eval_batch_size", "data.root", "data.download",
                  "data.cache_dir", "data.cifar_n_path", "data.csv_path", "train.allow_unfinished_runs"}
RUN_FILES = ("config.yaml", "run.json", "metrics.jsonl", "checkpoints", "eval.json", "predictions.npz", "plots")


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and not (prefix == "method." and k == "params"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def config_diff(a: RunConfig, b: RunConfig) -> list[str]:
    """Dotted keys whose values differ between two configs (execution-only keys excluded)."""
    fa, fb = _flat(a.to_dict()), _flat(b.to_dict())
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k) and k not in EXECUTION_KEYS)


def _holder(run_dir: Path) -> str:
    try:
        h = json.loads((run_dir / LOCK_NAME).read_text())
        return f"process {h['pid']} on {h['host']} ({h['command']}, since {h['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def run_lock(run_dir: str | Path, *, shared: bool = False, wait: bool = False, poll_s: float = 1.0,
             on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock of ``run_dir`` (creating the folder): exclusive for writers, ``shared`` for readers.

    When another process holds it, wait (``wait``; ``on_wait(holder)`` is called once) or raise an
    :class:`InputError` naming the holder. Re-entrant within one process. A reader on storage where the
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
        told = False
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(run_dir)
                if not wait:
                    raise InputError(f"run {str(run_dir)!r} is in use by {holder}; wait until it ends, or "
                                     "choose another --out") from None
                if not told:
                    log.warning("run %s is in use by %s; waiting for it", run_dir, holder)
                    if on_wait is not None:
                        on_wait(holder)
                    told = True
                time.sleep(poll_s)
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


def holds_files(folder: str | Path) -> bool:
    """True when ``folder`` is a directory holding anything besides its lock file."""
    folder = Path(folder)
    return folder.is_dir() and any(p.name != LOCK_NAME for p in folder.iterdir())


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


def read_status(run_dir: Path) -> dict[str, Any]:
    """Contents of ``run.json`` (empty when absent or unreadable)."""
    try:
        return json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def write_status(run_dir: Path, **fields) -> None:
    """Update ``run.json`` atomically."""
    st = read_status(run_dir)
    st.update(fields, dsink_version=__version__, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
    atomic_write_text(Path(run_dir) / "run.json", json.dumps(st, indent=2))


def run_state(run_dir: str | Path) -> str:
    """``finished``, ``running`` (a live process holds the run), ``stopped`` (marked running, but its process
    is gone: killed), ``crashed``, ``interrupted`` or ``unknown``."""
    status = read_status(Path(run_dir)).get("status", "unknown")
    if status == "running" and not is_locked(run_dir):
        return "stopped"
    return status


def is_average_run(run_dir: str | Path) -> bool:
    """True for a run directory written by :func:`dsink.eval.combine.average_runs` (nothing trained, no config)."""
    return read_status(Path(run_dir)).get("kind") == AVERAGE_KIND


def require_finished(run_dir: str | Path, what: str, *, allow_unfinished: bool = False, switch: str = "") -> None:
    """Refuse (InputError) a run that has not finished training, unless ``allow_unfinished``: then warn."""
    if is_average_run(run_dir):
        state = read_status(Path(run_dir)).get("status", "unknown")
    else:
        load_run_config(run_dir)  # a run directory at all?
        state = run_state(run_dir)
    if state == "finished":
        return
    done = _epochs_done(Path(run_dir))
    done = f" after epoch {done}" if done is not None else ""
    msg = f"{what} {str(run_dir)!r} is {state}{done}, not finished"
    if allow_unfinished:
        log.warning("%s; using it as it is", msg)
        return
    hint = "wait for it to finish" if state == "running" else f"finish it with `dsink train --resume --out {run_dir}`"
    raise InputError(f"{msg}; {hint}" + (f", or pass {switch} to use it as it is" if switch else ""))


def _epochs_done(run_dir: Path) -> int | None:
    """The last epoch logged in ``metrics.jsonl`` (None when there is none)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return int(json.loads(line)["epoch"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def read_eval(run_dir: str | Path) -> dict[str, Any]:
    """A run's ``eval.json``, validated."""
    fix = f"evaluate the run again with `dsink eval {run_dir}`"
    info = read_json(Path(run_dir) / "eval.json", fix)
    for key, kind in (("last", dict), ("data_fingerprint", str), ("num_classes", int)):
        if not isinstance(info.get(key), kind):
            raise InputError(f"{str(Path(run_dir) / 'eval.json')!r} lacks a valid {key!r}; {fix}")
    return info


def read_predictions(run_dir: str | Path) -> dict[str, Any]:
    """A run's ``predictions.npz``, validated: probabilities 2-D, finite and one row per sample."""
    import numpy as np

    path = Path(run_dir) / "predictions.npz"
    fix = f"regenerate it with `dsink eval {run_dir}`"
    arrays = read_npz(path, fix, required=("train_probs", "test_probs", "train_noisy"))
    k = arrays["train_probs"].shape[1] if arrays["train_probs"].ndim == 2 else -1
    for name, a in arrays.items():
        if name.endswith("_probs"):
            if a.ndim != 2 or a.shape[1] != k or a.dtype.kind != "f" or not np.isfinite(a).all():
                raise InputError(f"{str(path)!r}: {name} is not a finite (N, {k}) probability array; {fix}")
        elif a.dtype.kind not in "iu" or a.ndim != 1:
            raise InputError(f"{str(path)!r}: {name} is not a 1-D integer array; {fix}")
    if len(arrays["train_probs"]) != len(arrays["train_noisy"]):
        raise InputError(f"{str(path)!r}: train_probs and train_noisy have different lengths; {fix}")
    return arrays


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config stored in a run directory."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise InputError(f"{str(run_dir)!r} is not a dsink run directory (no config.yaml); pass a folder made by dsink train")
    return load_config(path)


def prepare_run_dir(run_dir: str | Path, cfg: RunConfig, *, resume: bool, force: bool) -> bool:
    """Create or check a run directory; returns True when there is training left to do.

    A finished run is never overwritten without ``force``; an unfinished one is continued
    only with ``resume``; a folder holding other files is refused.
    """
    run_dir = Path(run_dir)
    if (run_dir / "config.yaml").exists():
        status = read_status(run_dir).get("status", "unknown")
        if force:
            for name in RUN_FILES:
                p = run_dir / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        elif resume:
            diff = config_diff(load_run_config(run_dir), cfg)
            if diff:
                raise InputError(
                    f"run {str(run_dir)!r} was made by a different config (differs in {', '.join(diff)}); "
                    "resume with the run's own config, or pass --force to start over"
                )
            if status == "finished":
                return False
        elif status == "finished":
            raise InputError(f"run {str(run_dir)!r} is finished; pass --force to overwrite it or choose another --out")
        else:
            raise InputError(
                f"run {str(run_dir)!r} exists and is unfinished; pass --resume to continue it or --force to restart it"
            )
    elif run_dir.exists() and (not run_dir.is_dir() or holds_files(run_dir)):
        raise InputError(f"{str(run_dir)!r} exists and is not a dsink run directory; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    write_status(run_dir, status="running")
    return True
