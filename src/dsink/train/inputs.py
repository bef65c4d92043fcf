"""What a method is given: the inputs it declares (:attr:`Method.auxiliaries`, :meth:`Method.init_from`),
resolved from run directories here so that methods never read other runs.

A distillation (D-SINK, ``kd``) reads f_L's and f_N's training-set probabilities from their finished run
directories (under a shared lock, checked to belong to the target's data) and stores them in its own run
directory, so that it is resumed, evaluated, audited and plotted without its auxiliaries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from typing import Any

import numpy as np
import torch

from ..config import MethodConfig, RunConfig, add_hash_hook, run_name
from ..errors import InputError, check_choice
from ..eval.metrics import per_class_accuracy
from ..methods import MethodContext, build_method as _build_method, get_method, method_params
from ..methods.distill import AUX_CHECKPOINTS, SELECTED_ROLES
from ..runs import RunDir

UNFINISHED_SWITCH = "--allow-unfinished (train.allow_unfinished_runs=true)"
log = logging.getLogger(__name__)


def auxiliary_runs(cfg: MethodConfig) -> dict[str, str]:
    """The run directories ``cfg``'s method distils, by role (empty for a method that distils nothing)."""
    cls = get_method(cfg.name)
    params = method_params(cfg)
    return {role: getattr(params, field) for role, field in cls.auxiliaries.items()}


def read_auxiliaries(runs: dict[str, str], fingerprint: str, *, allow_unfinished: bool = False, wait: bool = False,
                     on_wait=None, checkpoint: str = "last") -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Training-set probabilities of the auxiliary runs (by role), read from their finished run directories and
    checked to belong to the target's data (the message names the run whose data differs), and their validation
    scores (:func:`validation_score`; roles without a validation split left out). A run another process holds
    for writing is waited for (``wait``; ``on_wait(holder)``) or refused, naming the holder.

    ``checkpoint``: ``last`` (the last epoch), ``selected`` (the checkpoint the run's selection rule chose on the
    noisy validation split, before the model memorised its noisy labels; a run without a validation split has
    none, and its last epoch is used, with a warning) or ``imbalance_selected`` (the f_L run's selected checkpoint,
    the f_N run's last epoch)."""
    check_choice(checkpoint, AUX_CHECKPOINTS, "aux_checkpoint")
    for role, run in runs.items():
        if not run:
            raise InputError(f"D-SINK needs method.params.{role}_run: a finished run directory "
                             f"(dsink distill --{role}-run RUN)")
    dirs = {role: RunDir(run) for role, run in runs.items()}
    with contextlib.ExitStack() as stack:
        for run in dirs.values():
            stack.enter_context(run.lock(shared=True, wait=wait, on_wait=on_wait))  # nobody rewrites them meanwhile
        fps = {}
        for role, run in dirs.items():
            run.require_finished(f"{role} run", allow_unfinished=allow_unfinished, switch=UNFINISHED_SWITCH)
            fps[role] = run.data_fingerprint()
        _check_fingerprints(runs, fps, fingerprint)
        preds = {role: run.read_predictions() for role, run in dirs.items()}
        preds = {role: _selected(role, dirs[role], p) if role in SELECTED_ROLES[checkpoint] else p
                 for role, p in preds.items()}
    scores = {role: validation_score(p) for role, p in preds.items()}
    return ({role: p["train_probs"] for role, p in preds.items()},
            {role: v for role, v in scores.items() if v is not None})


def _selected(role: str, run: RunDir, pred: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``pred`` with the selected checkpoint's training and validation probabilities in place of the last epoch's."""
    if "best_train_probs" in pred:
        return {**pred, "train_probs": pred["best_train_probs"], "val_probs": pred["best_val_probs"]}  # written together
    if run.has_checkpoint("best"):
        raise InputError(f"{role} run {str(run)!r} does not store the training-set probabilities of its selected "
                         f"checkpoint (it was evaluated by an older dsink); run `dsink eval {run}` once, or set "
                         "method.params.aux_checkpoint=last")
    log.warning("%s run %s has no selected checkpoint (no validation split): D-SINK reads its last epoch", role, run)
    return pred


def validation_score(pred: dict[str, np.ndarray]) -> float | None:
    """A run's class-balanced accuracy on the (noisy) validation split, from the saved predictions ``pred`` (its
    last epoch's, or its selected checkpoint's when :func:`read_auxiliaries` reads that; None without a validation
    split): the evidence a method may weigh its auxiliaries by."""
    probs, labels = pred.get("val_probs"), pred.get("val_noisy")
    if probs is None or labels is None or len(labels) == 0:
        return None
    return float(np.nanmean(per_class_accuracy(np.asarray(probs).argmax(1), np.asarray(labels), probs.shape[1])))


def _check_fingerprints(runs: dict[str, str], fps: dict[str, str], fingerprint: str) -> None:
    differ = [role for role, fp in fps.items() if fp != fingerprint]
    if len(differ) == 1 and len(fps) > 1:
        role = differ[0]
        raise InputError(
            f"{role} run {runs[role]!r} was trained on different data (other subsample, noise, split or seed) "
            f"than the target and the other auxiliary; train it again with the same data config")
    if differ:
        same = "share their data" if len(set(fps.values())) == 1 else "differ from each other too"
        names = " and ".join(repr(r) for r in runs.values())
        raise InputError(
            f"the target's data config differs from both auxiliaries' ({names} {same}); "
            "drop the data overrides of the target, or train the auxiliaries with the target's data config")


def _stored_inputs(run: RunDir, roles: set[str], fingerprint: str) -> tuple[dict[str, np.ndarray], dict[str, float]] | None:
    """The auxiliaries' probabilities and validation scores ``run`` stored when it was trained; None when it stores
    none or stores them for other data (a config that differs from the run's, which :meth:`RunDir.prepare` then
    refuses by name)."""
    if not run.has_inputs():
        return None
    probs, fp, scores = run.read_inputs()
    return (probs, scores) if fp == fingerprint and set(probs) == roles else None


def resumable_params(method: MethodConfig, run: RunDir) -> tuple[str, ...]:
    """The method params a resume of ``run`` may change: the auxiliaries' run directories, once the run stores
    their probabilities (the run goes on with those, wherever the auxiliaries are now)."""
    return tuple(get_method(method.name).auxiliaries.values()) if run.has_inputs() else ()


def method_inputs(method: MethodConfig, fingerprint: str, run: RunDir | None = None, *, stored: bool = True,
                  fresh_start: bool = False, allow_unfinished: bool = False, wait: bool = False,
                  on_wait=None) -> dict[str, Any]:
    """The :class:`MethodContext` fields the method of ``method`` declares.

    ``aux_probs`` / ``aux_scores``: the probabilities and validation scores ``run`` stores (when ``stored`` and
    it holds them: what it was trained with), else read from the auxiliary runs (unfinished ones only with
    ``allow_unfinished``, warning).
    ``init_weights`` (a method starting from an auxiliary's weights): only when training starts from scratch
    (``fresh_start``); otherwise a checkpoint restores the weights. ``wait``/``on_wait``: as in
    :func:`read_auxiliaries` (a ``dsink run`` sharing its cache with another waits for it).
    """
    aux = auxiliary_runs(method)
    out: dict[str, Any] = {}
    if aux:
        got = _stored_inputs(run, set(aux), fingerprint) if (stored and run is not None) else None
        if got is None:
            got = read_auxiliaries(aux, fingerprint, allow_unfinished=allow_unfinished, wait=wait, on_wait=on_wait,
                                   checkpoint=getattr(method_params(method), "aux_checkpoint", "last"))
        out["aux_probs"], out["aux_scores"] = got
    params = method_params(method)
    role = get_method(method.name).init_from(params)
    if role is not None and fresh_start:
        # the checkpoint whose probabilities the method reads (init_checkpoint=auxiliary), or the last
        selected = role in SELECTED_ROLES.get(getattr(params, "aux_checkpoint", "last"), ())
        which = "best" if selected and getattr(params, "init_checkpoint", "last") == "auxiliary" else "last"
        # read when the method uses it (init=fit starts from f_L only when f_N turns out unfit)
        out["init_weights"] = functools.partial(_first_model_state, RunDir(aux[role]), which)
    return out


def _first_model_state(run: RunDir, which: str = "last") -> dict[str, torch.Tensor]:
    """The state dict of the first network in ``run``'s ``which`` checkpoint (``best``: the selected one; a run
    without it - no validation split - gives its last, with a warning)."""
    if which == "best" and not run.checkpoint_path("best").is_file():
        log.warning("%s has no selected checkpoint (no validation split): starting from its last epoch", run.path)
        which = "last"
    return next(iter(run.load_checkpoint(which)["models"].values()))


def auxiliary_identity(path: str) -> str:
    """What a config hash records of an auxiliary run: ``<method>-<dataset>-<config hash>`` of the config the run
    stores, so that moving the run (or the cache holding it) changes no hash; the path itself when no run is
    there to read."""
    run = RunDir(path)
    try:
        return run_name(run.load_config()) if run.has_config() else str(path)
    except InputError:  # an unreadable config: the path is all there is
        return str(path)


def _hash_auxiliaries(cfg: RunConfig, flat: dict[str, Any]) -> dict[str, Any]:
    """Hash hook (:func:`dsink.config.add_hash_hook`): the auxiliary run paths in ``method.params`` replaced by
    :func:`auxiliary_identity`."""
    try:
        fields = get_method(cfg.method.name).auxiliaries.values()
    except InputError:
        return flat
    params = flat.get("method.params")
    if not isinstance(params, dict) or not any(params.get(f) for f in fields):
        return flat
    params = {k: ({"run": auxiliary_identity(v)} if k in fields and v else v) for k, v in params.items()}
    return {**flat, "method.params": params}


add_hash_hook("auxiliary runs", _hash_auxiliaries)


def store_inputs(run: RunDir, inputs: dict[str, Any], fingerprint: str) -> None:
    """Keep the auxiliaries' probabilities in the run (once), so that it no longer needs its auxiliaries."""
    if inputs.get("aux_probs") is not None and not run.has_inputs():
        run.write_inputs(inputs["aux_probs"], fingerprint, inputs.get("aux_scores"))


def build_method(cfg: MethodConfig, ctx: MethodContext, run: RunDir | None = None):
    """:func:`dsink.methods.build_method` with the method's inputs resolved first (from the auxiliary runs named
    in its params, or those ``run`` stores), as training does."""
    inputs = method_inputs(cfg, ctx.fingerprint, run, fresh_start=True)
    return _build_method(cfg, dataclasses.replace(ctx, **inputs))
