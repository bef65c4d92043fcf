"""Run directories: ``config.yaml``, ``run.json``, ``metrics.jsonl``, ``checkpoints/{last,best}.pt``,
``eval.json``, ``predictions.npz`` - enough to resume, evaluate and report from the folder alone."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import RunConfig, load_config, save_config
from ..errors import InputError
from ..fileio import atomic_write_text

# Keys that change how a run executes, not what it computes: they may differ on resume.
EXECUTION_KEYS = {"train.device", "train.num_threads", "train.eval_batch_size", "data.root", "data.download",
                  "data.cache_dir", "data.cifar_n_path", "data.csv_path"}
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
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise InputError(f"{str(run_dir)!r} exists and is not a dsink run directory; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    write_status(run_dir, status="running")
    return True
