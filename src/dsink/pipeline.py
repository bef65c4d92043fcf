"""``dsink run``: from data to a results table in one call.

A pipeline config is a run config (``data``, ``model``, ``optim``, ``train``: shared by every model)
plus a ``pipeline`` section naming what to train and compare::

    pipeline:
      imbalance: {name: la}            # f_L
      noise: {name: gce}               # f_N
      target: {}                       # D-SINK's method.params (the runs above are filled in)
      baselines: [ce]                  # single methods trained for comparison
      combined: [average, kd]          # naive combinations: "average" (of f_L and f_N), "kd" (that average
                                       # distilled into one model) or other registry methods
      params: {rolt: {warmup_epochs: 3}}   # method.params of baselines and combined methods, by method name
      seeds: [0]                       # training seeds; the table shows mean +- std over them
      vary_data_seed: false            # true: each seed is also the data seed (subsample, noise, split)
      overrides: {target: {optim: {epochs: 20}}}   # per-role changes (baseline/imbalance/noise/combined/target)
      out: null                        # default runs/pipeline-<hash>
      cache_dir: null                  # default runs/cache

Every model is trained into ``cache_dir/<method>-<dataset>-<config hash>``: a run whose resolved config
already exists there is reused (or resumed if it was interrupted), so a repeated or resumed
``dsink run`` only trains what is missing. The pipeline directory holds ``pipeline.yaml`` and the results
table as ``results.md``, ``results.csv`` and ``results.json``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .config import (MethodConfig, RunConfig, build_dataclass, config_from_dict, config_layers, digest, merge, run_name,
                     semantic_dict)
from .errors import InputError
from .fileio import atomic_write_text

log = logging.getLogger(__name__)

ROLE_KEYS = ("baseline", "imbalance", "noise", "combined", "target")

# The offline default of ``dsink run`` (no CONFIG): Fashion-MNIST-LT rho=100 with 40 % uniform_excl_true noise
# (the data defaults) and the CPU recipe on which D-SINK's defaults were measured (docs/dsink.md): MLP, Adam
# 1e-3, 15 epochs, batch 128, no augmentation; f_L = LA, f_N = GCE; one seed. configs/generate.py writes the
# CPU grid from the same recipe.
CPU_RECIPE: dict[str, Any] = {
    "model": {"name": "mlp"},
    "optim": {"optimizer": "adam", "lr": 0.001, "weight_decay": 0.0, "batch_size": 128, "epochs": 15,
              "schedule": "constant"},
    "train": {"augment": False, "track_correction": True},
    "pipeline": {"imbalance": {"name": "la"}, "noise": {"name": "gce"}, "baselines": ["ce"],
                 "combined": ["average", "kd"], "seeds": [0]},
}
METRICS = ("top1", "macro_f1", "many_acc", "medium_acc", "few_acc")


@dataclass
class PipelineConfig:
    """The ``pipeline`` section of a ``dsink run`` config (see the module docstring)."""

    imbalance: MethodConfig = field(default_factory=lambda: MethodConfig(name="la"))
    noise: MethodConfig = field(default_factory=lambda: MethodConfig(name="gce"))
    target: dict[str, Any] = field(default_factory=dict)
    baselines: list[str] = field(default_factory=lambda: ["ce"])
    combined: list[str] = field(default_factory=lambda: ["average", "kd"])
    params: dict[str, Any] = field(default_factory=dict)  # method.params of baselines/combined, by method name
    seeds: list[int] = field(default_factory=lambda: [0])
    vary_data_seed: bool = False  # each seed is also data.data_seed, so the spread includes the data draw
    paper: bool = False  # also train the paper's reading of D-SINK (method.params.preset=paper), row "D-SINK (paper)"
    overrides: dict[str, Any] = field(default_factory=dict)
    out: str | None = None
    cache_dir: str | None = None


def load_pipeline(path: str | Path | None = None, overrides: list[str] | None = None, *,
                  settings: dict[str, Any] | None = None) -> tuple[RunConfig, PipelineConfig]:
    """The shared run config and the pipeline section of a ``dsink run`` config (``CPU_RECIPE`` when ``path`` is
    None), with ``overrides`` and ``settings`` (the command-line flags) on top (:func:`dsink.config.config_layers`)."""
    from . import data as _datasets  # noqa: F401 - installs the datasets' own defaults (image_folder, npz, real noise)

    data = config_layers(path, overrides, base=CPU_RECIPE if path is None else None, settings=settings)
    if "method" in data:
        raise InputError("a dsink run config names its methods under pipeline: (imbalance, noise, baselines, combined, "
                         "target), not method:; remove the method section")
    pipe = build_dataclass(PipelineConfig, data.pop("pipeline", None) or {}, "pipeline.")
    unknown = set(pipe.overrides) - set(ROLE_KEYS)
    if unknown:
        raise InputError(f"unknown pipeline.overrides role(s) {', '.join(sorted(unknown))}; valid: {', '.join(ROLE_KEYS)}")
    if not pipe.seeds:
        raise InputError("pipeline.seeds is empty; give at least one training seed, e.g. [0]")
    repeated = sorted({s for s in pipe.seeds if pipe.seeds.count(s) > 1})
    if repeated:  # a repeated seed would be trained once but counted twice in the mean and spread
        unique = list(dict.fromkeys(pipe.seeds))
        raise InputError(f"pipeline.seeds repeats {', '.join(map(str, repeated))} ({pipe.seeds}); each seed is one "
                         f"training, so give distinct seeds, e.g. {unique}")
    stray = sorted(set(pipe.params) - set(pipe.baselines) - set(pipe.combined))
    if stray:
        raise InputError(f"pipeline.params names {', '.join(stray)}, which is not in pipeline.baselines or "
                         "pipeline.combined; add it there or remove its params (f_L, f_N: pipeline.imbalance/noise.params)")
    bad = [k for k, v in pipe.params.items() if not isinstance(v, dict)]
    if bad:
        raise InputError(f"pipeline.params.{bad[0]} must be a mapping of method params, e.g. {{warmup_epochs: 3}}")
    base = config_from_dict(data)
    return base, pipe


@dataclass
class Job:
    """One model of the pipeline."""

    label: str  # row name in the table
    role: str
    seed: int
    cfg: RunConfig | None = None  # None for the prediction average
    run_dir: Path | None = None


def role_config(base: RunConfig, pipe: PipelineConfig, role: str, method: MethodConfig, seed: int) -> RunConfig:
    """The resolved config of one model of the pipeline: ``base`` with ``method``, the role's
    ``pipeline.overrides`` and the training seed (also the data seed with ``pipeline.vary_data_seed``)."""
    from .train.api import resolve_config

    d = base.to_dict()
    d["method"] = {"name": method.name, "params": dict(method.params)}
    d = merge(d, pipe.overrides.get(role) or {})
    d["train"]["seed"] = seed
    if pipe.vary_data_seed:
        d["data"]["data_seed"] = seed
    return resolve_config(config_from_dict(d))


def _from_auxiliaries(name: str, target: dict[str, Any], fl: Path, fn: Path) -> dict[str, Any]:
    """Params of a combined method: for one that distils the auxiliaries (``kd``), their run directories and
    the target's settings of what it shares with D-SINK (alpha, base loss), so that the two differ only in
    how the soft target is made; nothing for the others."""
    from .methods import get_method
    from .methods.distill import DistillParams

    params = get_method(name).Params
    if not (dataclasses.is_dataclass(params) and issubclass(params, DistillParams)):
        return {}
    shared = {f.name for f in dataclasses.fields(DistillParams)}
    return {**{k: v for k, v in target.items() if k in shared}, "imbalance_run": str(fl), "noise_run": str(fn)}


def cache_run_dir(cfg: RunConfig, cache: str | Path) -> Path:
    """``cache/<method>-<dataset>-<config hash>`` (:func:`dsink.config.run_name`): the run of ``cfg`` in a
    pipeline cache. The config is resolved first, so every method default is part of the hash, as it is of
    the run's stored config; ``dsink train`` without ``--out`` names its run the same way under ``runs/``."""
    from .train.api import resolve_config

    return Path(cache) / run_name(resolve_config(cfg))


def pipeline_dir(base: RunConfig, pipe: PipelineConfig) -> Path:
    """The pipeline's output folder (``pipeline.out`` or ``runs/pipeline-<hash>``)."""
    if pipe.out:
        return Path(pipe.out)
    shared = {k: v for k, v in dataclasses.asdict(pipe).items() if k not in ("out", "cache_dir")}
    d = {"base": semantic_dict(base), "pipeline": shared}  # what the table compares, not where it is written
    return Path("runs") / f"pipeline-{digest(d)}"


def plan_jobs(base: RunConfig, pipe: PipelineConfig, cache: Path) -> list[Job]:
    """Every model of the pipeline, seed by seed, with its resolved config and cache folder (the combined
    methods that distil the auxiliaries are named after them; see :func:`run_pipeline`)."""
    jobs: list[Job] = []
    for seed in pipe.seeds:
        per_seed: dict[str, Job] = {}
        for name in pipe.baselines:
            method = MethodConfig(name=name, params=dict(pipe.params.get(name) or {}))
            per_seed[f"baseline:{name}"] = Job(name, "baseline", seed, role_config(base, pipe, "baseline", method, seed))
        per_seed["imbalance"] = Job(f"f_L ({pipe.imbalance.name})", "imbalance", seed,
                                    role_config(base, pipe, "imbalance", pipe.imbalance, seed))
        per_seed["noise"] = Job(f"f_N ({pipe.noise.name})", "noise", seed, role_config(base, pipe, "noise", pipe.noise, seed))
        for j in per_seed.values():
            j.run_dir = cache_run_dir(j.cfg, cache)
        fl, fn = per_seed["imbalance"].run_dir, per_seed["noise"].run_dir
        for name in pipe.combined:
            if name == "average":
                per_seed[f"combined:{name}"] = Job("average (f_L + f_N)", "combined", seed, None,
                                                   cache / f"average-{fl.name}-{fn.name}")
                continue
            method = MethodConfig(name=name, params={**(pipe.params.get(name) or {}),
                                                     **_from_auxiliaries(name, pipe.target, fl, fn)})
            job = Job(name, "combined", seed, role_config(base, pipe, "combined", method, seed))
            per_seed[f"combined:{name}"] = job  # its folder is named once f_L and f_N exist (see below)
        target = MethodConfig(name="dsink", params={**pipe.target, "imbalance_run": str(fl), "noise_run": str(fn)})
        per_seed["target"] = Job("D-SINK", "target", seed, role_config(base, pipe, "target", target, seed))
        if pipe.paper:  # the paper's reading beside dsink's default: the preset alone, the same auxiliaries
            paper = MethodConfig(name="dsink", params={"preset": "paper", "imbalance_run": str(fl), "noise_run": str(fn)})
            per_seed["paper"] = Job("D-SINK (paper)", "paper", seed, role_config(base, pipe, "target", paper, seed))
        jobs.extend(per_seed.values())
    return jobs


def run_pipeline(base: RunConfig, pipe: PipelineConfig, *, progress: bool = False,
                 on_job: Callable[[int, int, Job], None] | None = None,
                 on_wait: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train (or reuse) every model of the pipeline, evaluate them and write the results table.

    ``on_job(i, total, job)`` is called before each job (the CLI prints from it). A cached run another
    process is writing (a concurrent ``dsink run`` sharing the cache) is waited for, then reused;
    ``on_wait(holder)`` is called when that happens. Returns the results
    (``rows``: one dict per method with mean/std of each metric; ``runs``: the run directory of each job).
    """
    from .eval.combine import average_runs
    from .methods import list_methods
    from .train.api import train_run

    for name in pipe.combined:
        if name != "average" and name not in list_methods():
            raise InputError(f"unknown pipeline.combined entry {name!r}; use average or one of: {', '.join(list_methods())}")
    out = pipeline_dir(base, pipe)
    cache = Path(pipe.cache_dir) if pipe.cache_dir else Path("runs") / "cache"
    jobs = plan_jobs(base, pipe, cache)

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "pipeline.yaml", yaml.safe_dump(
        {**{k: v for k, v in base.to_dict().items() if k != "method"}, "pipeline": dataclasses.asdict(pipe)}, sort_keys=False))
    reports: list[tuple[Job, dict[str, Any]]] = []
    for i, job in enumerate(jobs):
        if job.run_dir is None:  # a distillation: its hash holds its auxiliaries' identities, read from their runs
            job.run_dir = cache_run_dir(job.cfg, cache)  # (trained by now), not their paths: a moved cache is reused
        if on_job is not None:
            on_job(i, len(jobs), job)
        if job.cfg is None:
            fl = next(j for j in jobs if j.seed == job.seed and j.role == "imbalance").run_dir
            fn = next(j for j in jobs if j.seed == job.seed and j.role == "noise").run_dir
            rep = average_runs(fl, fn, job.run_dir, force=True, wait=True, on_wait=on_wait)
        else:
            rep = train_run(job.cfg, job.run_dir, resume=True, progress=progress, wait=True, on_wait=on_wait)
        reports.append((job, rep))
    results = summarise(reports)
    add_health_and_deploy(results, jobs, pipe)
    results["pipeline_dir"] = str(out)
    write_results(results, out)
    return results


def add_health_and_deploy(results: dict[str, Any], jobs: list[Job], pipe: PipelineConfig) -> None:
    """``results["health"]``: the auxiliaries' check (:func:`dsink.eval.health.auxiliary_health`) and the target's
    (:func:`dsink.eval.health.target_health`) of every seed, each warning once with the seeds it holds for, and the
    auxiliaries' mean noisy-validation scores; ``results["deploy"]``: the row to deploy
    (:func:`dsink.eval.health.deploy_row`; no test labels), also marked on its row (``deploy: true``)."""
    from .eval.health import auxiliary_health, deploy_row, target_health

    found: dict[tuple, dict[str, Any]] = {}
    scores: dict[str, list[float]] = {}
    selected = pipe.target.get("aux_checkpoint", "imbalance_selected") != "last"
    for seed in pipe.seeds:
        runs = {j.role: j for j in jobs if j.seed == seed and j.role in ("imbalance", "noise")}
        ce = next((j.run_dir for j in jobs if j.seed == seed and j.role == "baseline" and j.label == "ce"), None)
        labels = {r: runs[r].label for r in ("imbalance", "noise")}
        check = auxiliary_health(runs["imbalance"].run_dir, runs["noise"].run_dir, ce_run=ce, labels=labels,
                                 selected_imbalance=selected)
        target = next((j for j in jobs if j.seed == seed and j.role == "target"), None)
        if target is not None:
            check["warnings"] += target_health(target.run_dir, runs["imbalance"].run_dir, runs["noise"].run_dir,
                                               label=target.label)
        for w in check["warnings"]:
            key = (w["role"], w["kind"], tuple(w["classes"]))
            found.setdefault(key, {**w, "seeds": []})["seeds"].append(seed)
        for role, score in check["scores"].items():
            if score is not None:
                scores.setdefault(role, []).append(score)
    results["health"] = {"ok": not found, "warnings": list(found.values()),
                         "scores": {role: sum(v) / len(v) for role, v in scores.items()}}
    deploy = deploy_row(results["rows"], results["health"])
    if deploy is not None:
        results["deploy"] = deploy
        for row in results["rows"]:
            row["deploy"] = row["method"] == deploy["method"]


def mean_std(vals: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0 for one value) of the values that are not None; (None, None) when
    none is."""
    v = [x for x in vals if x is not None]
    if not v:
        return None, None
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, s


def summarise(reports: list[tuple[Job, dict[str, Any]]]) -> dict[str, Any]:
    """Mean and std over seeds of each metric, one row per method (in pipeline order)."""
    order: list[str] = []
    by: dict[str, list[tuple[Job, dict]]] = {}
    for job, rep in reports:
        if job.label not in by:
            order.append(job.label)
        by.setdefault(job.label, []).append((job, rep))
    rows = []
    for label in order:
        items = by[label]
        rows.append({"method": label, "role": items[0][0].role, "seeds": [j.seed for j, _ in items],
                     "runs": [str(j.run_dir) for j, _ in items], **metric_stats([r for _, r in items])})
    out = {"rows": rows, "metrics": list(METRICS) + ["correction_rate", "top1_best_val"]}
    notes = sorted({rep["note"] for _, rep in reports if rep.get("note")})
    if notes:
        out["notes"] = notes
    out["evaluated_on"] = sorted({rep.get("evaluated_on", "test") for _, rep in reports})
    return out


def metric_stats(reports: list[dict[str, Any]]) -> dict[str, float | None]:
    """Mean and std (``<metric>_std``) over runs' evaluation reports: the last epoch's METRICS, the
    label-correction rate, and ``top1_best_val`` - the top-1 of the selected checkpoint: the best class-balanced
    accuracy on the noisy validation split (``dsink.train.engine.SELECTION_RULE``; no test labels)."""
    values = {m: [r["last"].get(m) for r in reports] for m in METRICS}
    values["correction_rate"] = [(r.get("train") or {}).get("correction_rate") for r in reports]
    values["top1_best_val"] = [(r.get("best") or {}).get("top1") for r in reports]
    out: dict[str, float | None] = {}
    for key, vals in values.items():
        out[key], out[key + "_std"] = mean_std(vals)
    return out


def _cell(row: dict, key: str) -> str:
    m, s = row.get(key), row.get(key + "_std")
    if m is None:
        return "-"
    return f"{100 * m:.2f} ± {100 * s:.2f}" if len(row["seeds"]) > 1 else f"{100 * m:.2f}"


HEADERS = {"top1": "top-1", "macro_f1": "macro-F1", "many_acc": "many", "medium_acc": "medium", "few_acc": "few",
           "correction_rate": "label correction", "top1_best_val": "top-1 @best val"}


def results_markdown(results: dict[str, Any]) -> str:
    """The results table as markdown (percent; mean ± std over seeds when there are several)."""
    keys = results["metrics"]
    lines = ["| method | role | " + " | ".join(HEADERS[k] for k in keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    for r in results["rows"]:
        name = f"{r['method']} (deploy)" if r.get("deploy") else r["method"]
        lines.append(f"| {name} | {r['role']} | " + " | ".join(_cell(r, k) for k in keys) + " |")
    if results.get("deploy"):
        lines.append(f"\nDeploy: {results['deploy']['method']} - {results['deploy']['rule']}.")
    lines += [f"\nHealth: {w['message']} (seeds {', '.join(map(str, w['seeds']))})"
              for w in (results.get("health") or {}).get("warnings", [])]
    lines += [f"\nNote: {n}" for n in results.get("notes", [])]
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], out: Path) -> None:
    """``results.md``, ``results.csv`` and ``results.json`` in ``out``."""
    atomic_write_text(out / "results.md", results_markdown(results))
    buf = io.StringIO()
    keys = results["metrics"]
    w = csv.writer(buf)
    w.writerow(["method", "role", "n_seeds"] + [c for k in keys for c in (k, k + "_std")])
    for r in results["rows"]:
        w.writerow([r["method"], r["role"], len(r["seeds"])] + [
            "" if r.get(c) is None else f"{r[c]:.6f}" for k in keys for c in (k, k + "_std")])
    atomic_write_text(out / "results.csv", buf.getvalue())
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
