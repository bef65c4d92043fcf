"""A run directory and all of its I/O: the only code that knows the layout.

::

    RUN/config.yaml              resolved config (trained runs; an average has none)
    RUN/run.json                 status: running | finished | crashed | interrupted; kind, epochs, error...
    RUN/metrics.jsonl            one JSON row per epoch
    RUN/checkpoints/{last,best}.pt
    RUN/eval.json                evaluation report
    RUN/predictions.npz          probabilities of every split and the labels they were scored against
    RUN/inputs.npz               what a distillation was given (the auxiliaries' training-set probabilities)
    RUN/plots/                   figures of ``dsink plot``
    RUN/selection.npz            a sample-selecting method's latest per-sample decision (clean, label)
    RUN/audit.csv                flagged training labels of ``dsink audit``
    RUN/.lock                    the single-writer lock (:mod:`.lock`)

Enough to resume, evaluate and report from the folder alone. An *average* run (``dsink average``) is a run
directory of kind ``average``: status, report and predictions, no config or checkpoints (nothing trained).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import numpy as np

from .. import __version__
from ..config import EXECUTION_KEYS, RunConfig, config_from_dict, flat_keys, read_yaml_config, save_config
from ..errors import InputError
from ..resolve import check_values
from ..fileio import append_text, atomic_write, atomic_write_text, read_json, read_npz, remove_stale_temporaries
from .checkpoint import load_run_checkpoint, save_checkpoint
from .lock import LOCK_NAME, is_locked, lock_holder, run_lock

log = logging.getLogger(__name__)
AVERAGE_KIND = "average"  # run.json "kind" of an average run (dsink average)
CHECKPOINTS = ("last", "best")
RUN_SECTIONS = ("data", "model", "optim", "train", "method")  # what a run's config.yaml holds
STATES = ("running", "finished", "crashed", "interrupted")  # run.json "status"


def config_diff(a: RunConfig, b: RunConfig, ignore_params: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ between two configs (execution-only keys and the method params
    named in ``ignore_params`` excluded)."""
    fa, fb = flat_keys(a.to_dict()), flat_keys(b.to_dict())
    for f in (fa, fb):
        f["method.params"] = {k: v for k, v in (f.get("method.params") or {}).items() if k not in ignore_params}
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k) and k not in EXECUTION_KEYS)


class RunDir:
    """One run directory (see the module docstring for its layout); a path-like wrapper, so ``Path(run)`` and
    ``str(run)`` give the folder."""

    CONFIG = "config.yaml"
    STATUS = "run.json"
    METRICS = "metrics.jsonl"
    CHECKPOINT_DIR = "checkpoints"
    EVAL = "eval.json"
    PREDICTIONS = "predictions.npz"
    INPUTS = "inputs.npz"
    SELECTION = "selection.npz"
    PLOTS = "plots"
    AUDIT = "audit.csv"
    SAMPLE_PATHS = "train_paths.txt"  # image data: the file of each training sample, one per line
    PREDICTIONS_DIR = "predictions"  # large predictions: one memory-mapped .npy per array instead of PREDICTIONS
    MEMMAP_ABOVE_BYTES = 256 << 20  # predictions larger than this are written as PREDICTIONS_DIR
    FILES = (CONFIG, STATUS, METRICS, CHECKPOINT_DIR, EVAL, PREDICTIONS, INPUTS, SELECTION, PLOTS, SAMPLE_PATHS,
             PREDICTIONS_DIR)  # what a wipe removes

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------ layout
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def eval_path(self) -> Path:
        return self.path / self.EVAL

    @property
    def predictions_path(self) -> Path:
        return self.path / self.PREDICTIONS

    @property
    def plots_dir(self) -> Path:
        """Default folder of ``dsink plot``'s figures."""
        return self.path / self.PLOTS

    @property
    def audit_path(self) -> Path:
        """Default CSV of ``dsink audit``."""
        return self.path / self.AUDIT

    def checkpoint_path(self, which: str = "last") -> Path:
        """``checkpoints/last.pt`` (the end of the last epoch) or ``checkpoints/best.pt`` (best noisy validation)."""
        if which not in CHECKPOINTS:
            raise ValueError(f"checkpoint {which!r}: use one of {CHECKPOINTS}")
        return self.path / self.CHECKPOINT_DIR / f"{which}.pt"

    def has_config(self) -> bool:
        """A trained run (it stores its config)."""
        return (self.path / self.CONFIG).is_file()

    def has_eval(self) -> bool:
        return self.eval_path.exists()

    def has_checkpoint(self, which: str = "last") -> bool:
        return self.checkpoint_path(which).exists()

    def has_inputs(self) -> bool:
        return (self.path / self.INPUTS).is_file()

    def has_prediction(self, name: str) -> bool:
        """The saved predictions hold the array ``name`` (read from the file's index, not loaded)."""
        folder = self.path / self.PREDICTIONS_DIR
        if folder.is_dir():
            return (folder / f"{name}.npy").is_file()
        try:
            with np.load(self.predictions_path) as z:
                return name in z.files
        except (OSError, ValueError):
            return False

    def is_run(self) -> bool:
        """A dsink run directory: a trained run or an average."""
        return self.has_config() or self.is_average

    def holds_files(self) -> bool:
        """True when the folder holds anything besides its lock file."""
        return self.path.is_dir() and any(p.name != LOCK_NAME for p in self.path.iterdir())

    # ------------------------------------------------------------------ lock
    def lock(self, *, shared: bool = False, wait: bool = False, poll_s: float = 1.0,
             on_wait: Callable[[str], None] | None = None, busy_hint: str | None = None,
             mark_abandoned: bool = False) -> ContextManager[None]:
        """The run's lock (:func:`dsink.runs.lock.run_lock`): exclusive for the writer, ``shared`` for readers.
        ``mark_abandoned`` (training): a run left ``running`` by a dead process is marked crashed once the lock is
        taken from nobody (:meth:`_mark_abandoned`); readers see it as ``stopped`` (:meth:`state`) meanwhile."""
        return self._locked(shared=shared, wait=wait, poll_s=poll_s, on_wait=on_wait, busy_hint=busy_hint,
                            mark=mark_abandoned)

    @contextlib.contextmanager
    def _locked(self, *, shared: bool, mark: bool, **kwargs) -> Iterator[None]:
        fresh = mark and not shared and not self.is_locked()  # not re-entrant: this process does not hold it yet
        previous = self.last_holder() if fresh else ""  # read before taking the lock writes this process there
        with run_lock(self.path, shared=shared, **kwargs):
            if fresh:
                self._mark_abandoned(previous)
            yield

    def _mark_abandoned(self, holder: str) -> None:
        """With the exclusive lock just taken: a status still ``running`` was left by a process that died without
        marking it (SIGKILL, a killed torchrun rank 0, a power cut); say so in run.json."""
        try:
            if self.read_status().get("status") != "running":
                return
            who = f"the process that ran it ({holder})" if holder else "the process that ran it"
            self.write_status(status="crashed", error=f"{who} ended without marking it (killed?)")
            log.warning("run %s was marked running, but %s is gone: marked crashed", self, holder)
        except (OSError, InputError) as e:  # read-only storage, a damaged run.json: leave it to the reader
            log.debug("could not mark %s crashed: %s", self, e)

    def last_holder(self) -> str:
        """Who held the run's lock last (its process, host, command and start) as the lock file says; empty when
        it says nothing (a holder that ended normally empties it)."""
        return lock_holder(self.path)

    def is_locked(self) -> bool:
        """True when a process (this one included) holds the exclusive lock."""
        return is_locked(self.path)

    # ------------------------------------------------------------------ status
    def read_status(self) -> dict[str, Any]:
        """Contents of ``run.json`` (empty when absent), validated: a file edited by hand into something
        dsink never writes is an InputError naming it (the file is written atomically, so never torn)."""
        path = self.path / self.STATUS
        if not path.exists():
            return {}
        fix = f"restore the file, or start the run over with --force (dsink average: recreate it)"
        st = read_json(path, fix)
        for key, ok, valid in (("status", lambda v: v in STATES, " or ".join(STATES)),
                               ("kind", lambda v: isinstance(v, str), "a string"),
                               ("epochs", lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
                               ("error", lambda v: v is None or isinstance(v, str), "a string or null")):
            if key in st and not ok(st[key]):
                raise InputError(f"{str(path)!r}: {key} is {st[key]!r}, not {valid}; {fix}")
        return st

    def write_status(self, **fields) -> None:
        """Update ``run.json`` atomically."""
        st = self.read_status()
        st.update(fields, dsink_version=__version__, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        atomic_write_text(self.path / self.STATUS, json.dumps(st, indent=2))

    @property
    def is_average(self) -> bool:
        """A run written by :func:`dsink.eval.combine.average_runs` (nothing trained, no config)."""
        return self.read_status().get("kind") == AVERAGE_KIND

    def state(self) -> str:
        """``finished``, ``running`` (a live process holds the run), ``stopped`` (marked running, but its process
        is gone: killed, see :meth:`last_holder`), ``crashed``, ``interrupted`` or ``unknown``."""
        status = self.read_status().get("status", "unknown")
        if status == "running" and not self.is_locked():
            return "stopped"
        return status

    def require_finished(self, what: str, *, allow_unfinished: bool = False, switch: str = "") -> None:
        """Refuse (InputError) a run that has not finished training, unless ``allow_unfinished``: then warn."""
        if self.is_average:
            state = self.read_status().get("status", "unknown")
        else:
            self.load_config()  # a run directory at all?
            state = self.state()
        if state == "finished":
            return
        done = self.epochs_done()
        done = f" after epoch {done}" if done is not None else ""
        msg = f"{what} {str(self)!r} is {state}{done}, not finished"
        holder = self.last_holder() if state == "stopped" else ""
        if holder:  # run.json says running, but nobody holds the run: the process that did died
            msg += f" (marked running, but {holder} is gone)"
        if allow_unfinished:
            log.warning("%s; using it as it is", msg)
            return
        hint = "wait for it to finish" if state == "running" else f"finish it with `dsink train --resume --out {self}`"
        raise InputError(f"{msg}; {hint}" + (f", or pass {switch} to use it as it is" if switch else ""))

    def start_average(self, imbalance_run: str | Path, noise_run: str | Path, weight: float) -> None:
        """Mark the folder as an average run being written, naming its sources."""
        self.write_status(kind=AVERAGE_KIND, status="running", imbalance_run=str(imbalance_run),
                          noise_run=str(noise_run), weight=weight)

    def average_sources(self) -> tuple[str, str, float]:
        """The imbalance run, the noise run and the weight of an average run."""
        st = self.read_status()
        if "imbalance_run" not in st or "noise_run" not in st:
            raise InputError(f"{str(self.path / self.STATUS)!r} lacks imbalance_run/noise_run; recreate the run with "
                             "dsink average")
        return st["imbalance_run"], st["noise_run"], float(st.get("weight", 0.5))

    # ------------------------------------------------------------------ config
    def load_config(self) -> RunConfig:
        """The resolved config stored in the run."""
        path = self.path / self.CONFIG
        if not path.is_file():
            raise InputError(f"{str(self)!r} is not a dsink run directory (no {self.CONFIG}); pass a folder made by "
                             "dsink train")
        fix = "restore the file as dsink wrote it, or retrain the run with --force"
        try:
            data = read_yaml_config(path)
            missing = [k for k in RUN_SECTIONS if not isinstance(data.get(k), dict)]
            if missing:  # a run stores its whole resolved config: a section short is an edit, not a default
                raise InputError(f"it lacks the section(s) {', '.join(missing)}")
            cfg = config_from_dict(data)
            check_values(cfg)
        except InputError as e:
            raise InputError(f"run config {str(path)!r} is not one dsink wrote: {e}; {fix}") from None
        return cfg

    def save_config(self, cfg: RunConfig) -> None:
        save_config(cfg, self.path / self.CONFIG)

    # ------------------------------------------------------------------ metrics
    def read_metrics(self, upto: int | None = None) -> list[dict[str, Any]]:
        """The per-epoch rows (those with epoch <= ``upto`` when given); a torn last line from a crash is dropped."""
        path = self.path / self.METRICS
        if not path.exists():
            return []
        fix = "restore the file, or retrain the run with --force"
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise InputError(f"{str(path)!r} is not text (JSON rows); {fix}") from None
        lines = text.splitlines()
        if lines and not text.endswith("\n"):  # the last row was being appended when the process died
            lines, torn = lines[:-1], lines[-1]
            if _json_row(torn) is not None:
                lines.append(torn)
        rows = []
        for i, line in enumerate(lines, 1):
            r = _json_row(line)
            if r is None:
                raise InputError(f"{str(path)!r} line {i} is not a JSON row with an integer epoch; {fix}")
            if upto is None or r["epoch"] <= upto:
                rows.append(r)
        return rows

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Replace the rows (atomically)."""
        atomic_write_text(self.path / self.METRICS, "".join(json.dumps(r) + "\n" for r in rows))

    def append_metrics(self, row: dict[str, Any]) -> None:
        append_text(self.path / self.METRICS, json.dumps(row) + "\n")

    def epochs_done(self) -> int | None:
        """The last epoch logged (None when there is none)."""
        rows = self.read_metrics()  # validated: every row has an integer epoch
        return rows[-1]["epoch"] if rows else None

    # ------------------------------------------------------------------ evaluation and predictions
    def read_eval(self) -> dict[str, Any]:
        """The evaluation report, validated."""
        fix = f"evaluate the run again with `dsink eval {self}`"
        info = read_json(self.eval_path, fix)
        for key, kind in (("last", dict), ("data_fingerprint", str), ("num_classes", int)):
            if not isinstance(info.get(key), kind):
                raise InputError(f"{str(self.eval_path)!r} lacks a valid {key!r}; {fix}")
        for key in ("last", "best"):
            if key in info and info[key] is not None:
                problem = _report_problem(info[key], info["num_classes"], best=key == "best")
                if problem:
                    raise InputError(f"{str(self.eval_path)!r}: {key!r} {problem}; {fix}")
        return info

    def data_fingerprint(self) -> str:
        """The fingerprint of the data the run was evaluated on (runs made from it must share it)."""
        return self.read_eval()["data_fingerprint"]

    def write_eval(self, report: dict[str, Any]) -> None:
        atomic_write_text(self.eval_path, json.dumps(report, indent=2))

    def read_predictions(self) -> dict[str, np.ndarray]:
        """The saved predictions, validated: probabilities 2-D, finite and one row per sample."""
        path = self.predictions_path
        fix = f"regenerate it with `dsink eval {self}`"
        if (self.path / self.PREDICTIONS_DIR).is_dir():
            path = self.path / self.PREDICTIONS_DIR
            arrays = _read_npy_dir(path, fix, required=("train_probs", "test_probs", "train_noisy"))
        else:
            arrays = read_npz(path, fix, required=("train_probs", "test_probs", "train_noisy"))
        k = arrays["train_probs"].shape[1] if arrays["train_probs"].ndim == 2 else -1
        for name, a in arrays.items():
            if name.endswith("_probs"):
                _check_probs(a, k, f"{str(path)!r}: {name}", fix)
            elif a.dtype.kind not in "iu" or a.ndim != 1:
                raise InputError(f"{str(path)!r}: {name} is not a 1-D integer array; {fix}")
        for split in ("train", "val", "test"):  # one row per sample of the split in every array of it
            lengths = {n: len(a) for n, a in arrays.items() if n.removeprefix("best_").startswith(f"{split}_")}
            if len(set(lengths.values())) > 1:
                shown = ", ".join(f"{n} {k}" for n, k in lengths.items())
                raise InputError(f"{str(path)!r}: the {split} arrays have different lengths ({shown}); {fix}")
        return arrays

    def write_predictions(self, arrays: dict[str, np.ndarray]) -> None:
        """Write the predictions: one compressed ``.npz``, or, above :attr:`MEMMAP_ABOVE_BYTES`, a folder of ``.npy``
        files that :meth:`read_predictions` memory-maps (large data sets: nothing is loaded whole)."""
        folder = self.path / self.PREDICTIONS_DIR
        if sum(np.asarray(a).nbytes for a in arrays.values()) <= self.MEMMAP_ABOVE_BYTES:
            atomic_write(self.predictions_path, lambda f: np.savez_compressed(f, **arrays))
            if folder.is_dir():
                shutil.rmtree(folder)
            return
        folder.mkdir(parents=True, exist_ok=True)
        for name in {p.stem for p in folder.glob("*.npy")} - set(arrays):
            (folder / f"{name}.npy").unlink()
        for name, a in arrays.items():
            atomic_write(folder / f"{name}.npy", lambda f, a=a: np.save(f, np.asarray(a)))
        self.predictions_path.unlink(missing_ok=True)

    def write_sample_paths(self, paths) -> None:
        """The file of each training sample (image data), in training order, for audits."""
        atomic_write_text(self.path / self.SAMPLE_PATHS, "".join(f"{p}\n" for p in paths))

    def read_sample_paths(self, n: int) -> list[str] | None:
        """The stored training-sample files (None when the run has none); an InputError unless there are ``n``."""
        path = self.path / self.SAMPLE_PATHS
        if not path.is_file():
            return None
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{str(path)!r} cannot be read ({e}); regenerate it with `dsink eval {self}`") from None
        if len(lines) != n:
            raise InputError(f"{str(path)!r} lists {len(lines)} files for {n} training samples; "
                             f"regenerate it with `dsink eval {self}`")
        return lines

    # ------------------------------------------------------------------ a method's sample selection
    def write_selection(self, selection: dict[str, np.ndarray]) -> None:
        """Store a method's per-sample decision on the training set (``clean``, optionally ``label``)."""
        arrays = {"clean": np.asarray(selection["clean"], dtype=np.float32)}
        if selection.get("label") is not None:
            arrays["label"] = np.asarray(selection["label"], dtype=np.int64)
        atomic_write(self.path / self.SELECTION, lambda f: np.savez_compressed(f, **arrays))

    def read_selection(self, n: int) -> dict[str, np.ndarray] | None:
        """The stored per-sample selection (None when the method selects nothing); an InputError unless it
        covers ``n`` training samples."""
        path = self.path / self.SELECTION
        if not path.is_file():
            return None
        fix = f"train the run again with --force, or remove {str(path)!r}"
        arrays = read_npz(path, fix, required=("clean",))
        bad = [k for k, a in arrays.items() if a.shape != (n,)]
        if bad:
            raise InputError(f"{str(path)!r} holds {bad[0]} of shape {arrays[bad[0]].shape} for {n} training "
                             f"samples; {fix}")
        return arrays

    # ------------------------------------------------------------------ inputs of a distillation
    def read_inputs(self) -> tuple[dict[str, np.ndarray], str, dict[str, float]]:
        """The auxiliaries' training-set probabilities the run was given, by role, their data fingerprint, and
        their validation scores by role (empty for runs stored without them)."""
        path = self.path / self.INPUTS
        fix = f"train the run again with --force, or restore its auxiliary runs and remove {str(path)!r}"
        arrays = read_npz(path, fix, required=("data_fingerprint",))
        fingerprint = str(arrays.pop("data_fingerprint"))
        probs = {k[: -len("_train_probs")]: a for k, a in arrays.items() if k.endswith("_train_probs")}
        for role, a in probs.items():
            _check_probs(a, -1, f"{str(path)!r}: {role}_train_probs", fix)
        scores = {k[: -len("_val_score")]: float(a) for k, a in arrays.items() if k.endswith("_val_score")}
        return probs, fingerprint, scores

    def write_inputs(self, probs: dict[str, np.ndarray], fingerprint: str,
                     scores: dict[str, float] | None = None) -> None:
        """Store the auxiliaries' training-set probabilities (by role) and their validation scores, so that the
        run is evaluated, resumed and plotted without them."""
        arrays = {f"{role}_train_probs": np.asarray(a, dtype=np.float32) for role, a in probs.items()}
        arrays.update({f"{role}_val_score": np.asarray(v, dtype=np.float64) for role, v in (scores or {}).items()})
        arrays["data_fingerprint"] = np.asarray(fingerprint)
        atomic_write(self.path / self.INPUTS, lambda f: np.savez_compressed(f, **arrays))

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, state: dict[str, Any], which: str = "last") -> None:
        save_checkpoint(state, self.checkpoint_path(which))

    def load_checkpoint(self, which: str = "last", map_location="cpu") -> dict[str, Any]:
        return load_run_checkpoint(self.checkpoint_path(which), map_location=map_location)

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files a process killed mid-write left in the run and its checkpoint folder."""
        return [p for folder in (self.path, self.path / self.CHECKPOINT_DIR) for p in remove_stale_temporaries(folder)]

    # ------------------------------------------------------------------ life cycle
    def wipe(self) -> None:
        """Remove every run file (the folder and its lock stay)."""
        for name in self.FILES:
            p = self.path / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)

    def prepare(self, cfg: RunConfig, *, resume: bool, force: bool, ignore_params: tuple[str, ...] = ()) -> bool:
        """Create or check the run for training ``cfg``; returns True when there is training left to do.

        A finished run is never overwritten without ``force``; an unfinished one is continued only with
        ``resume`` (its config must match ``cfg``, but for the method params in ``ignore_params``); a folder
        holding other files is refused.
        """
        if self.has_config():
            if force:  # before anything is read: --force also starts over a run whose files were damaged
                self.wipe()
                return self._start(cfg)
            status = self.read_status().get("status", "unknown")
            if resume:
                diff = config_diff(self.load_config(), cfg, ignore_params)
                if diff:
                    raise InputError(
                        f"run {str(self)!r} was made by a different config (differs in {', '.join(diff)}); "
                        "resume with the run's own config, or pass --force to start over")
                if status == "finished":
                    return False
            elif status == "finished":
                raise InputError(f"run {str(self)!r} is finished; pass --force to overwrite it or choose another --out")
            else:
                raise InputError(f"run {str(self)!r} exists and is unfinished; pass --resume to continue it or --force "
                                 "to restart it")
        elif self.path.exists() and (not self.path.is_dir() or self.holds_files()):
            raise InputError(f"{str(self)!r} exists and is not a dsink run directory; choose another --out")
        return self._start(cfg)

    def _start(self, cfg: RunConfig) -> bool:
        self.path.mkdir(parents=True, exist_ok=True)
        self.save_config(cfg)
        self.write_status(status="running")
        return True


REPORT_SCORES = ("top1", "macro_f1", "many_acc", "medium_acc", "few_acc")  # what tables and plots read


def _number_or_none(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _report_problem(r, num_classes: int, best: bool) -> str:
    """What is wrong with one checkpoint's scores in an evaluation report ('' when nothing is)."""
    if not isinstance(r, dict):
        return "is not a mapping of scores"
    bad = [k for k in REPORT_SCORES if not _number_or_none(r.get(k))]
    if bad:
        return f"has no number for {', '.join(bad)}"
    acc = r.get("per_class_acc")
    if not (isinstance(acc, list) and len(acc) == num_classes and all(_number_or_none(a) for a in acc)):
        return f"has no per_class_acc list of {num_classes} numbers"
    if best and not isinstance(r.get("epoch"), int):
        return "has no integer epoch"
    return ""


def _json_row(line: str) -> dict[str, Any] | None:
    """A metrics row (a JSON object with an integer ``epoch``), or None when ``line`` is not one."""
    try:
        r = json.loads(line)
    except ValueError:
        return None
    ok = isinstance(r, dict) and isinstance(r.get("epoch"), int) and not isinstance(r["epoch"], bool)
    return r if ok else None


def _read_npy_dir(folder: Path, fix: str, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The ``.npy`` arrays of a predictions folder, memory-mapped read-only."""
    arrays = {}
    for f in sorted(folder.glob("*.npy")):
        try:
            arrays[f.stem] = np.load(f, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"{str(f)!r} cannot be read ({e}); {fix}") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise InputError(f"{str(folder)!r} lacks {', '.join(missing)}; {fix}")
    return arrays


def _check_probs(a: np.ndarray, k: int, what: str, fix: str) -> None:
    """Refuse an array that is not a finite (N, k) float array (any k when ``k`` < 0)."""
    ok = a.ndim == 2 and (k < 0 or a.shape[1] == k) and a.dtype.kind == "f" and bool(np.isfinite(a).all())
    if not ok:
        raise InputError(f"{what} is not a finite (N, {k if k >= 0 else 'C'}) probability array; {fix}")
