"""Top-level training and evaluation of run directories."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..data import build_data, canonical_noise_mode, get_dataset
from ..errors import InputError, check_choice
from ..eval.evaluate import evaluate_trainer
from ..methods.base import get_method, method_params_dict
from ..models import get_model
from .engine import Trainer, resolve_device
from .optim import get_optimizer
from .rundir import load_run_config, prepare_run_dir, run_lock, run_state, write_status
from .schedule import get_schedule

log = logging.getLogger(__name__)


def resolve_config(cfg: RunConfig) -> RunConfig:
    """Validate every name in ``cfg`` and fill in method defaults, before anything is written."""
    from ..data.longtail import PROFILES

    get_dataset(cfg.data.dataset)  # each registry raises an InputError listing its valid names
    canonical_noise_mode(cfg.data.noise_mode)
    check_choice(cfg.data.profile, PROFILES, "profile")
    get_model(cfg.model.name)
    get_method(cfg.method.name)
    get_optimizer(cfg.optim.optimizer)
    get_schedule(cfg.optim.schedule)
    resolve_device(cfg.train.device)
    _check_numbers(cfg)
    cfg = dataclasses.replace(cfg, method=dataclasses.replace(
        cfg.method, params=method_params_dict(cfg.method.name, cfg.method.params)))
    return cfg


def _check_numbers(cfg: RunConfig) -> None:
    """Refuse numeric settings no run can use (InputError naming the key and the valid range)."""
    o, t = cfg.optim, cfg.train
    checks = (
        ("optim.epochs", o.epochs, isinstance(o.epochs, int) and o.epochs >= 1, "an integer >= 1"),
        ("optim.batch_size", o.batch_size, isinstance(o.batch_size, int) and o.batch_size >= 1, "an integer >= 1"),
        ("optim.lr", o.lr, math.isfinite(o.lr) and o.lr > 0, "a number > 0"),
        ("optim.weight_decay", o.weight_decay, math.isfinite(o.weight_decay) and o.weight_decay >= 0, "a number >= 0"),
        ("optim.momentum", o.momentum, 0 <= o.momentum < 1, "in [0, 1)"),
        ("optim.gamma", o.gamma, math.isfinite(o.gamma) and o.gamma > 0, "a number > 0"),
        ("optim.warmup_epochs", o.warmup_epochs, 0 <= o.warmup_epochs <= o.epochs, "in [0, optim.epochs]"),
        ("train.eval_batch_size", t.eval_batch_size, t.eval_batch_size >= 1, "an integer >= 1"),
        ("train.eval_test_every", t.eval_test_every, t.eval_test_every >= 0, "an integer >= 0"),
        ("train.num_threads", t.num_threads, t.num_threads >= 0, "an integer >= 0 (0: torch's default)"),
        ("model.width", cfg.model.width, cfg.model.width >= 0, "an integer >= 0 (0: the model's default)"),
    )
    for key, value, ok, valid in checks:
        if not ok:
            raise InputError(f"{key} must be {valid}, got {value!r}")
    bad = [m for m in o.milestones if not (isinstance(m, int) and 0 < m <= o.epochs)]
    if bad:
        raise InputError(f"optim.milestones must be epochs in 1..optim.epochs ({o.epochs}), got {bad}")


def _mark_stopped(run_dir: Path, err: BaseException) -> None:
    """Record in ``run.json`` why training stopped (a crashed run is never left marked running)."""
    status = "interrupted" if isinstance(err, KeyboardInterrupt) else "crashed"
    try:
        write_status(run_dir, status=status, error=f"{type(err).__name__}: {err}"[:500])
    except OSError as e:  # e.g. the disk that made it crash is still full
        log.warning("could not mark run %s as %s (%s)", run_dir, status, e)


def train_run(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False, force: bool = False,
              progress: bool = False, stop_after: int | None = None, wait: bool = False,
              on_wait=None) -> dict[str, Any] | None:
    """Train ``cfg`` into ``run_dir`` and evaluate it.

    Returns the evaluation report, or None when ``stop_after`` ended training early.
    A finished run that is resumed is not retrained; its stored evaluation is returned.
    Everything (config, data, the method and its inputs) is validated before the run directory is touched.
    The process holds the run's lock while it works: with ``wait`` it waits for another holder (``on_wait(holder)``
    is called once), else it raises an InputError naming the holder.
    """
    from .. import distributed

    cfg = resolve_config(cfg)
    run_dir = Path(run_dir)
    info = distributed.init_from_env(cfg.train.device)
    data = build_data(cfg.data)
    trainer = Trainer(cfg, data, run_dir, progress=progress)  # builds (and so checks) the method and its inputs
    with contextlib.ExitStack() as stack:
        todo, err = False, None
        if info.is_main:  # only rank 0 touches the run directory; the others follow its decision
            try:
                stack.enter_context(run_lock(run_dir, wait=wait, on_wait=on_wait))
                todo = prepare_run_dir(run_dir, cfg, resume=resume, force=force)
            except (InputError, OSError) as e:
                err = e
        if not distributed.all_ok(err is None):
            raise err or InputError(f"rank 0 refused the run directory {str(run_dir)!r}; see its message")
        if info.active and not info.is_main:
            from .rundir import read_status

            todo = read_status(run_dir).get("status") != "finished"
        if not todo:
            log.info("run %s is already finished", run_dir)
            return (_stored_eval(run_dir) or evaluate_run(run_dir)) if info.is_main else None
        try:
            trainer.fit(resume=resume, stop_after=stop_after)
            if trainer.epoch < cfg.optim.epochs or not info.is_main:
                distributed.barrier()
                return None
            report = evaluate_trainer(trainer)
            write_status(run_dir, status="finished", epochs=trainer.epoch, device=str(trainer.device),
                         processes=info.world, error=None)
        except BaseException as e:
            if info.is_main:
                _mark_stopped(run_dir, e)
            raise
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
    from .rundir import read_eval

    try:
        return read_eval(run_dir)
    except InputError as e:
        log.warning("%s; evaluating the run again", e)
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
    state = run_state(run_dir)
    with run_lock(run_dir):  # refuses a run another process is training
        trainer.epoch = trainer.load_weights(last)
        if trainer.epoch < cfg.optim.epochs or state != "finished":
            log.warning("run %s is %s after epoch %d of %d: evaluating the partial model as it is (dsink distill and "
                        "dsink average refuse it until it is finished)", run_dir, state, trainer.epoch, cfg.optim.epochs)
        return evaluate_trainer(trainer)
