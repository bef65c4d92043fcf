"""Top-level training and evaluation of run directories."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any

from .. import distributed
from ..config import RunConfig, load_config
from ..data import build_data, canonical_noise_mode, get_dataset
from ..errors import InputError, check_choice
from ..eval.combine import reevaluate_average
from ..eval.evaluate import evaluate_trainer
from ..methods.base import get_method, method_params_dict
from ..models import get_model
from ..resolve import check_values
from ..runs import RunDir
from .engine import Trainer, resolve_device
from .inputs import method_inputs, resumable_params, store_inputs
from .optim import get_optimizer
from .schedule import get_schedule
from .tensorboard import require_tensorboard

log = logging.getLogger(__name__)


def resolve_config(cfg: RunConfig) -> RunConfig:
    """Validate every name (against the registries) and value (:func:`dsink.resolve.check_values`) in ``cfg``
    and fill in the method's defaults: the resolved config, which is what a run stores and what its hash
    (:func:`dsink.config.config_hash`) is taken of. Every entry point calls it before anything is written."""
    from ..data.longtail import PROFILES

    get_dataset(cfg.data.dataset)  # each registry raises an InputError listing its valid names
    canonical_noise_mode(cfg.data.noise_mode)
    check_choice(cfg.data.profile, PROFILES, "profile")
    get_model(cfg.model.name)
    get_method(cfg.method.name)
    get_optimizer(cfg.optim.optimizer)
    get_schedule(cfg.optim.schedule)
    resolve_device(cfg.train.device)
    require_tensorboard(cfg.train.tensorboard)
    check_values(cfg)
    cfg = dataclasses.replace(cfg, method=dataclasses.replace(
        cfg.method, params=method_params_dict(cfg.method.name, cfg.method.params)))
    return cfg


def log_auxiliary_health(cfg: RunConfig) -> dict[str, Any] | None:
    """Before a distillation of f_L and f_N trains: warn (logging) about an auxiliary that is unfit for the data
    (:func:`dsink.eval.health.auxiliary_health`); returns the check, or None for a method that distils nothing."""
    from ..eval.health import auxiliary_health
    from .inputs import auxiliary_runs

    aux = auxiliary_runs(cfg.method)
    if set(aux) != {"imbalance", "noise"}:
        return None
    checkpoint = cfg.method.params.get("aux_checkpoint", "last")
    try:
        health = auxiliary_health(aux["imbalance"], aux["noise"], selected_imbalance=checkpoint != "last")
    except InputError as e:  # the check reads what the runs saved; training reports a broken run itself
        log.debug("auxiliary health check skipped: %s", e)
        return None
    for w in health["warnings"]:
        log.warning("auxiliary health: %s", w["message"])
    return health


def _mark_stopped(run: RunDir, err: BaseException) -> None:
    """Record in the run's status why training stopped (a crashed run is never left marked running)."""
    status = "interrupted" if isinstance(err, KeyboardInterrupt) else "crashed"
    try:
        run.write_status(status=status, error=f"{type(err).__name__}: {err}"[:500])
    except (OSError, InputError) as e:  # e.g. the disk that made it crash is still full, or run.json was damaged
        log.warning("could not mark run %s as %s (%s)", run, status, e)


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
    cfg = resolve_config(cfg)
    run = RunDir(run_dir)
    info = distributed.init_from_env(cfg.train.device)
    data = build_data(cfg.data)
    stored = resume and not force  # a resumed run keeps the inputs it stores (what it was started with)
    inputs = method_inputs(cfg.method, data.fingerprint, run, stored=stored,
                           fresh_start=not (stored and run.has_checkpoint("last")),
                           allow_unfinished=cfg.train.allow_unfinished_runs, wait=wait, on_wait=on_wait)
    trainer = Trainer(cfg, data, run, progress=progress, inputs=inputs)  # builds (and so checks) the method
    with contextlib.ExitStack() as stack:
        todo, err = False, None
        if info.is_main:  # only rank 0 touches the run directory; the others follow its decision
            try:
                stack.enter_context(run.lock(wait=wait, on_wait=on_wait, mark_abandoned=True))
                todo = run.prepare(cfg, resume=resume, force=force, ignore_params=resumable_params(cfg.method, run))
                if todo:
                    store_inputs(run, inputs, data.fingerprint)
                    log_auxiliary_health(cfg)
            except (InputError, OSError) as e:
                err = e
        if not distributed.all_ok(err is None):
            raise err or InputError(f"rank 0 refused the run directory {str(run)!r}; see its message")
        if info.active and not info.is_main:
            todo = run.read_status().get("status") != "finished"
        if not todo:
            log.info("run %s is already finished", run)
            if not info.is_main:
                return None
            report = _stored_eval(run)
            if report is None or (run.has_checkpoint("best") and not run.has_prediction("best_train_probs")):
                report = evaluate_run(run)  # evaluated by an older dsink: add what distillations now read
            return report
        try:
            trainer.fit(resume=resume, stop_after=stop_after)
            if trainer.epoch < cfg.optim.epochs or not info.is_main:
                distributed.barrier()
                return None
            report = evaluate_trainer(trainer)
            run.write_status(status="finished", epochs=trainer.epoch, device=str(trainer.device),
                             processes=info.world, error=None)
        except BaseException as e:
            if info.is_main:
                _mark_stopped(run, e)
            if distributed.peer_lost(e):  # one dsink line instead of gloo's/NCCL's traceback
                raise distributed.PeerLost(
                    f"process {info.rank} of {info.world}: another training process of the run {str(run)!r} "
                    f"stopped, so a collective failed ({str(e).strip().splitlines()[0][:160]})"
                    + ("; the run is marked crashed" if info.is_main else "") +
                    f"; resume it with the same torchrun command and `--resume --out {run}`") from e
            raise
        distributed.barrier()
        return report


def distill_config(imbalance_run: str | Path, noise_run: str | Path, config: str | Path | None = None,
                   overrides: list[str] | None = None, settings: dict[str, Any] | None = None) -> RunConfig:
    """Config of a D-SINK target run: the noise run's data, model and optimiser, method ``dsink``.

    Then the YAML file ``config`` (if any), ``overrides`` and ``settings`` (the command-line flags) apply on
    top (:func:`dsink.config.config_layers`).
    """
    base = RunDir(noise_run).load_config().to_dict()
    base["method"] = {"name": "dsink", "params": {"imbalance_run": str(imbalance_run), "noise_run": str(noise_run)}}
    return load_config(config, overrides, base=base, settings=settings)


def _stored_eval(run: RunDir) -> dict[str, Any] | None:
    try:
        return run.read_eval()
    except InputError as e:
        log.warning("%s; evaluating the run again", e)
        return None


def evaluate_run(run_dir: str | Path, *, device: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Re-evaluate a run directory from its stored config, inputs and last checkpoint (an average run of
    :func:`dsink.eval.combine.average_runs` is recomputed from its two source runs)."""
    run = RunDir(run_dir)
    if run.is_average:
        return reevaluate_average(run)
    cfg = run.load_config()
    if device is not None:
        cfg.train.device = device
    data = build_data(cfg.data)
    inputs = method_inputs(cfg.method, data.fingerprint, run, allow_unfinished=cfg.train.allow_unfinished_runs)
    trainer = Trainer(cfg, data, run, progress=progress, inputs=inputs)
    state = run.state()
    with run.lock(busy_hint="wait until it ends, then evaluate it again"):  # refuses a run being trained
        store_inputs(run, inputs, data.fingerprint)  # a run made before runs stored their inputs: now it does
        trainer.epoch = trainer.load_weights("last")
        if trainer.epoch < cfg.optim.epochs or state != "finished":
            log.warning("run %s is %s after epoch %d of %d: evaluating the partial model as it is (dsink distill and "
                        "dsink average refuse it until it is finished)", run_dir, state, trainer.epoch, cfg.optim.epochs)
        return evaluate_trainer(trainer)
