"""Top-level training and evaluation of run directories."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..data import build_data, canonical_noise_mode
from ..errors import InputError, check_choice
from ..eval.evaluate import evaluate_trainer
from ..methods.base import METHODS, method_params_dict
from ..models import MODELS
from .engine import OPTIMIZERS, Trainer, resolve_device
from .rundir import load_run_config, prepare_run_dir, write_status
from .schedule import SCHEDULES

log = logging.getLogger(__name__)


def resolve_config(cfg: RunConfig) -> RunConfig:
    """Validate every name in ``cfg`` and fill in method defaults, before anything is written."""
    from ..data.longtail import PROFILES
    from ..data.sources import DATASETS

    check_choice(cfg.data.dataset, DATASETS, "dataset")
    canonical_noise_mode(cfg.data.noise_mode)
    check_choice(cfg.data.profile, PROFILES, "profile")
    check_choice(cfg.model.name, MODELS, "model")
    check_choice(cfg.method.name, METHODS, "method")
    check_choice(cfg.optim.optimizer, OPTIMIZERS, "optimizer")
    check_choice(cfg.optim.schedule, SCHEDULES, "schedule")
    resolve_device(cfg.train.device)
    cfg = dataclasses.replace(cfg, method=dataclasses.replace(
        cfg.method, params=method_params_dict(cfg.method.name, cfg.method.params)))
    return cfg


def train_run(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False, force: bool = False,
              progress: bool = False, stop_after: int | None = None) -> dict[str, Any] | None:
    """Train ``cfg`` into ``run_dir`` and evaluate it.

    Returns the evaluation report, or None when ``stop_after`` ended training early.
    A finished run that is resumed is not retrained; its stored evaluation is returned.
    """
    from . import distributed

    cfg = resolve_config(cfg)
    info = distributed.init_from_env(cfg.train.device)
    data = build_data(cfg.data)  # data errors surface before the run directory is touched
    todo, err = False, None
    if info.is_main:  # only rank 0 touches the run directory; the others follow its decision
        try:
            todo = prepare_run_dir(run_dir, cfg, resume=resume, force=force)
        except InputError as e:
            err = e
    if not distributed.all_ok(err is None):
        raise err or InputError(f"rank 0 refused the run directory {str(run_dir)!r}; see its message")
    if info.active and not info.is_main:
        from .rundir import read_status

        todo = read_status(Path(run_dir)).get("status") != "finished"
    trainer = Trainer(cfg, data, run_dir, progress=progress)
    if not todo:
        log.info("run %s is already finished", run_dir)
        return (_stored_eval(run_dir) or evaluate_run(run_dir)) if info.is_main else None
    trainer.fit(resume=resume, stop_after=stop_after)
    if trainer.epoch < cfg.optim.epochs or not info.is_main:
        distributed.barrier()
        return None
    report = evaluate_trainer(trainer)
    write_status(run_dir, status="finished", epochs=trainer.epoch, device=str(trainer.device),
                 processes=info.world)
    distributed.barrier()
    return report


def distill_config(imbalance_run: str | Path, noise_run: str | Path, config: str | Path | None = None,
                   overrides: list[str] | None = None) -> RunConfig:
    """Config of a D-SINK target run: the noise run's data, model and optimiser, method ``dsink``.

    Then the YAML file ``config`` (if any) and ``overrides`` apply on top.
    """
    from ..config import _merge, config_from_dict, parse_overrides, read_yaml_config

    base = load_run_config(noise_run).to_dict()
    base["method"] = {"name": "dsink", "params": {"imbalance_run": str(imbalance_run), "noise_run": str(noise_run)}}
    base = _merge(base, read_yaml_config(config))
    return config_from_dict(_merge(base, parse_overrides(overrides or [])))


def _stored_eval(run_dir) -> dict[str, Any] | None:
    import json

    try:
        return json.loads((Path(run_dir) / "eval.json").read_text())
    except (OSError, ValueError):
        return None


def evaluate_run(run_dir: str | Path, *, device: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Re-evaluate a run directory from its ``config.yaml`` and ``checkpoints/last.pt`` (an average run of
    :func:`dsink.eval.combine.average_runs` is recomputed from its two source runs)."""
    from ..eval.combine import is_average_run, reevaluate_average

    if is_average_run(run_dir):
        return reevaluate_average(run_dir)
    cfg = load_run_config(run_dir)
    if device is not None:
        cfg.train.device = device
    data = build_data(cfg.data)
    trainer = Trainer(cfg, data, run_dir, progress=progress)
    last = Path(run_dir) / "checkpoints" / "last.pt"
    trainer.epoch = trainer.load_weights(last)
    if trainer.epoch < cfg.optim.epochs:
        log.warning("run %s stopped after epoch %d of %d; evaluating it as it is", run_dir, trainer.epoch, cfg.optim.epochs)
    return evaluate_trainer(trainer)
