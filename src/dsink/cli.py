"""The ``dsink`` command line. Only this module prints; library code logs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError, TrainingError

if TYPE_CHECKING:  # pragma: no cover
    from .config import RunConfig


def _add_config_args(p: argparse.ArgumentParser, base: str = "the built-in defaults") -> None:
    p.add_argument("config", nargs="?", help=f"YAML config file, applied on top of {base} (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=0.05 (repeatable)")


def _add_flags(p: argparse.ArgumentParser, command: str) -> None:
    """The shortcut flags of ``command``, from the one flag table (:data:`dsink.resolve.FLAGS`)."""
    from .resolve import flags_for

    for f in flags_for(command):
        if f.kind == "switch":
            p.add_argument(f.option, action="store_true", help=f.help)
        else:
            kind = {"str": str, "int": int, "float": float, "ints": int}[f.kind]
            p.add_argument(f.option, type=kind, nargs="+" if f.kind == "ints" else None, help=f.help)


def _add_run_args(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--out", help=f"run directory (default {default_out})")
    p.add_argument("--resume", action="store_true", help="continue an unfinished run directory")
    p.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _settings(args, command: str) -> dict:
    """The config settings of the flags given to ``command`` (the last layer, after YAML and --set)."""
    from .resolve import flag_settings

    return flag_settings(command, vars(args))


def _config(args, command: str, base: dict | None = None) -> "RunConfig":
    from . import data  # noqa: F401 - installs the datasets' own defaults (image_folder, npz, real noise)
    from .config import load_config

    return load_config(args.config, args.overrides, base=base, settings=_settings(args, command))


def _fmt(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def print_report(report: dict, title: str = "") -> None:
    """Print an evaluation report as a small table."""
    if title:
        print(title)
    print(f"{'checkpoint':<12}{'top1':>8}{'macroF1':>9}{'many':>8}{'medium':>8}{'few':>8}")
    for key in ("last", "best"):
        r = report.get(key)
        if r:
            label = key if key == "last" else f"best@{r['epoch']}"
            print(f"{label:<12}{_fmt(r['top1']):>8}{_fmt(r['macro_f1']):>9}{_fmt(r['many_acc']):>8}"
                  f"{_fmt(r['medium_acc']):>8}{_fmt(r['few_acc']):>8}")
    if report.get("note"):
        print(f"note: {report['note']}")
    t = report.get("train")
    if t:
        print(f"train: realised noise {_fmt(t['noise_rate'])} %, labels corrected {_fmt(t['correction_rate'])} %, "
              f"flag precision {_fmt(t['flag_precision'])} %, recall {_fmt(t['flag_recall'])} %")


def cmd_train(args) -> int:
    from .runs import RunDir

    base = None
    if args.resume and args.config is None and args.out and RunDir(args.out).has_config():
        base = RunDir(args.out).load_config().to_dict()  # resume: the run's own config, then --set and the flags
    return _train_and_report(_config(args, "train", base), args)


def _train_and_report(cfg, args) -> int:
    """Resolve ``cfg`` (every check, before anything is written), train it into ``--out`` (default
    runs/<method>-<dataset>-<config hash>, :func:`dsink.config.run_name`) and print its report."""
    from . import train
    from .config import run_name
    from .distributed import current

    cfg = train.resolve_config(cfg)
    out = args.out or f"runs/{run_name(cfg)}"

    from .runs import RunDir

    if args.resume and not RunDir(out).has_config():
        what = "does not exist" if not Path(out).exists() else f"is not a dsink run directory (no {RunDir.CONFIG})"
        raise InputError(f"--resume: {out!r} {what}; check the path, or drop --resume to start a new run")
    args.run_dir = out  # for the interrupt hint
    report = train.train_run(cfg, out, resume=args.resume, force=args.force, progress=not args.quiet)
    if current().is_main:  # under torchrun only rank 0 reports
        print(f"run directory: {out}")
        if report is not None:
            print_report(report)
    return 0


def cmd_distill(args) -> int:
    from .train import distill_config

    cfg = distill_config(args.imbalance_run, args.noise_run, args.config, args.overrides,
                         settings=_settings(args, "distill"))
    return _train_and_report(cfg, args)


def cmd_average(args) -> int:
    from .eval.combine import average_runs

    report = average_runs(args.imbalance_run, args.noise_run, args.out, weight=args.weight, force=args.force,
                          allow_unfinished=args.allow_unfinished)
    print(f"run directory: {args.out}")
    print_report(report)
    return 0


def cmd_run(args) -> int:
    from .pipeline import load_pipeline, results_markdown, run_pipeline

    base, pipe = load_pipeline(args.config, args.overrides, settings=_settings(args, "run"))

    def on_job(i, total, job):
        what = "averaging" if job.cfg is None else "training"
        print(f"[{i + 1}/{total}] {what} {job.label}, seed {job.seed} -> {job.run_dir}", flush=True)

    def on_wait(holder):
        print(f"  waiting: the run is in use by {holder}", flush=True)

    results = run_pipeline(base, pipe, progress=not args.quiet, on_job=on_job, on_wait=on_wait)
    print()
    print(results_markdown(results))
    print(f"results: {results['pipeline_dir']}/results.{{md,csv,json}}")
    if not args.no_report:
        _run_report(results["pipeline_dir"])
    return 0


def _run_report(pipeline_dir: str) -> None:
    """The end of ``dsink run``: the HTML report of the pipeline folder (a failure is printed, not fatal: the
    results are written)."""
    from .report import write_report

    try:
        print(f"report: {write_report(pipeline_dir)}")
    except InputError as e:
        print(f"dsink: report not written: {e}; the results are in {pipeline_dir}", file=sys.stderr)


def cmd_report(args) -> int:
    from .report import write_report

    print(write_report(args.path, args.out, max_items=args.max_items))
    return 0


def cmd_predict(args) -> int:
    from .train.predict import predict_files

    summary = predict_files(args.run, args.data, args.out, checkpoint=args.checkpoint, device=args.device,
                            progress=not args.quiet, skip_unreadable=args.skip_unreadable)
    top = sorted(summary["predicted_counts"].items(), key=lambda kv: -kv[1])[:10]
    print(f"labelled {summary['samples']} samples with {args.run} ({summary['checkpoint']} checkpoint, epoch "
          f"{summary['epoch']}): {summary['csv']}")
    print("predicted: " + ", ".join(f"{c} {n}" for c, n in top))
    if args.json:
        print(json.dumps(summary))
    return 0


def cmd_audit(args) -> int:
    import csv

    from .eval.audit import audit_run

    summary = audit_run(args.run, args.out)
    print(f"{summary['flagged']} of {summary['num_train']} training labels rejected by the {summary['source']} "
          f"of {args.run}; ranked list: {summary['csv']}")
    for part in ("overall", "tail"):
        q = summary.get(part)
        if q:
            print(f"{part:<8} flagged {q['flagged']:>6}  truly noisy {q['noisy']:>6}  precision {_fmt(q['precision'])} %  "
                  f"recall {_fmt(q['recall'])} %")
    if "method_judged_noisy" in summary:
        print(f"the method's own selection judged {summary['method_judged_noisy']} labels noisy (columns method_clean"
              ", method_label)")
        for part, q in (summary.get("method_selection") or {}).items():
            print(f"  {part:<8} precision {_fmt(q['precision'])} %  recall {_fmt(q['recall'])} %")
    with open(summary["csv"]) as f:
        rows = list(csv.DictReader(f))[: args.top]
    if rows:
        print(f"top {len(rows)}: position given -> suggested (confidence)")
        for r in rows:
            print(f"  {r['train_position']:>7} {r['given_name']} -> {r['suggested_name']} ({float(r['confidence']):.3f})")
    if args.json:
        print(json.dumps(summary))
    return 0


def cmd_plot(args) -> int:
    from .plots import plot_path

    paths = plot_path(args.path, args.out, embedding=args.embedding and not args.no_embedding)
    for p in paths:
        print(p)
    if not paths:
        print("nothing to plot (no evaluated runs, correction curves or alpha sweep found)")
    return 0


def cmd_eval(args) -> int:
    from .train import evaluate_run

    report = evaluate_run(args.run, device=args.device, progress=not args.quiet)
    print_report(report, title=f"run {args.run}:")
    if args.json:
        print(json.dumps(report))
    return 0


def cmd_embed(args) -> int:
    from .train.api import resolve_config
    from .train.embed import embed

    cfg = resolve_config(_config(args, "embed"))
    s = embed(cfg, args.out, progress=not args.quiet)
    print(f"wrote {s['out']}: {s['num_train']} train + {s['num_val']} val, {s['num_test']} test samples x {s['dim']} "
          f"features of {s['model']} ({s['backend']} backend, {s['seconds']:.1f} s)")
    print(f"train on them: dsink run --set data.dataset=npz --set data.root={s['out']} --set model.name=mlp "
          "--set data.noise_mode=none --set data.imbalance_ratio=1")
    return 0


def cmd_describe(args) -> int:
    from .data import describe
    from .resolve import check_values

    from .config import read_yaml_config

    if "pipeline" in read_yaml_config(args.config):  # a dsink run config (configs/*.yaml): its shared data section
        from .pipeline import load_pipeline

        cfg, _ = load_pipeline(args.config, args.overrides, settings=_settings(args, "describe"))
    else:
        cfg = _config(args, "describe")
    check_values(cfg)
    d = describe(cfg.data)
    if args.json:
        print(json.dumps(d))
        return 0
    print(f"{d['dataset']}: {d['num_samples']} samples ({d['num_train']} train / {d['num_val']} val), "
          f"{d['num_test']} test, {d['num_classes']} classes")
    requested = "labels as given" if d["noise_mode"] == "none" else f"requested {d['noise_rate_requested']}"
    print(f"long tail: profile {d['profile']}, ratio {d['imbalance_ratio']}; noise: {d['noise_mode']} {requested}, "
          + (f"realised {100 * d['noise_rate']:.2f} %" if "noise_rate" in d else "realised: unknown (no true labels)"))
    if d.get("given_imbalance_ratio"):
        print(f"imbalance of the given labels (largest / smallest class): {d['given_imbalance_ratio']:.1f}")
    print(f"validation: {d['validation']}" + (f"; test: {d['test']}" if "test" in d else ""))
    if "images" in d:
        im = d["images"]
        side = im.get("shorter_side", {})
        print(f"images: {im['num_files']} files ({im['files_checked']} headers read), "
              f"{im.get('distinct_sizes', 0)} distinct sizes, shorter side {side.get('min', '-')}..{side.get('max', '-')}"
              f" (median {side.get('median', '-')}), resized to {im['image_size']}")
        print("  modes: " + ", ".join(f"{k} {v}" for k, v in im["modes"].items())
              + "; formats: " + ", ".join(f"{k} {v}" for k, v in im["formats"].items()))
        if im["num_unreadable"]:
            print(f"  {im['num_unreadable']} unreadable: " + "; ".join(im["unreadable"][:10]))
    names = d["class_names"]
    print(f"{'class':<14}{'true':>7}{'noisy':>7}")
    for c, name in enumerate(names):
        true = d["true_counts"][c] if "true_counts" in d else "-"
        print(f"{name[:13]:<14}{true:>7}{d['noisy_counts'][c]:>7}")
    if "transition" in d and d["num_classes"] <= 20:
        print("transition matrix T[true, noisy] (%):")
        for c, row in enumerate(d["transition"]):
            print(f"{c:>3} " + " ".join(f"{100 * v:5.1f}" for v in row))
    return 0


# `dsink list WHAT`: the module owning each registry and the width of the name column
_LISTS = {"methods": ("methods", "METHOD_REGISTRY", 22), "models": ("models", "MODEL_REGISTRY", 18),
          "datasets": ("data", "DATASET_REGISTRY", 16), "optimizers": ("train.optim", "OPTIMIZER_REGISTRY", 12),
          "schedules": ("train.schedule", "SCHEDULE_REGISTRY", 12), "noise-modes": ("data", "NOISE_MODE_REGISTRY", 20)}
LIST_KINDS = tuple(_LISTS)


def cmd_list(args) -> int:
    import importlib

    module, attr, width = _LISTS[args.what]
    reg = getattr(importlib.import_module(f"{__package__}.{module}"), attr)
    names = reg.names()  # registration order; methods by role
    if args.what == "methods":
        from .methods import ROLES

        names = sorted(names, key=lambda n: (ROLES.index(reg.info(n)["role"]), n))
    for name in names:
        info = reg.info(name)
        role = f"{info['role']:<11}" if "role" in info else ""
        aliases = f"; aliases: {', '.join(info['aliases'])}" if info["aliases"] else ""
        print(f"{name:<{max(width, len(name) + 2)}}{role}{info['description']}{aliases}".rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dsink`` command."""
    from . import __version__

    p = argparse.ArgumentParser(prog="dsink", description="Train classifiers on long-tailed, noisily labelled data.")
    p.add_argument("--version", action="version", version=f"dsink {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one method into a run directory, then evaluate it")
    _add_config_args(t)
    _add_flags(t, "train")
    _add_run_args(t, "runs/<method>-<dataset>-<config hash>")
    t.set_defaults(func=cmd_train)

    em = sub.add_parser("embed", help="features of a frozen (pretrained) network for the data, as an .npz that "
                        "data.dataset=npz trains on")
    _add_config_args(em)
    _add_flags(em, "embed")
    em.add_argument("--out", required=True, help="the .npz file to write (X, y, is_val, X_test, y_test, class_names, "
                    "paths)")
    em.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    em.set_defaults(func=cmd_embed)

    ds = sub.add_parser("distill", help="train the D-SINK target from an imbalance-robust and a noise-robust run")
    ds.add_argument("--imbalance-run", required=True, help="run directory of f_L (e.g. made with --method la)")
    ds.add_argument("--noise-run", required=True, help="run directory of f_N; its data/model config is the starting point")
    _add_config_args(ds, base="the noise run's stored config")
    _add_flags(ds, "distill")
    _add_run_args(ds, "runs/dsink-<dataset>-<config hash>")
    ds.set_defaults(func=cmd_distill)

    r = sub.add_parser("run", help="train f_L, f_N, baselines and the D-SINK target, then write a results table",
                       description="Train (or reuse cached) f_L, f_N, baselines, naive combinations and the D-SINK "
                                   "target, evaluate them and write results.{md,csv,json} and report.html. With no config: the "
                                   "offline default (Fashion-MNIST, rho=100, 40% uniform_excl_true noise; MLP, Adam, 15 "
                                   "epochs; f_L = LA, f_N = GCE; seed 0).")
    _add_config_args(r)
    _add_flags(r, "run")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    r.add_argument("--no-report", action="store_true", help="skip the HTML report (default: PIPELINE/report.html)")
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser("report", help="one self-contained HTML page: results, the model to deploy, figures and the "
                        "flagged training samples", description="Write one self-contained HTML page (no network) "
                        "about a dsink run folder or a run directory: the results table with the row to deploy (chosen "
                        "on the noisy validation split), health warnings, label correction, figures (matplotlib), "
                        "per-class accuracy and a gallery of the flagged training samples. The audit's full ranked "
                        "list is written beside the page as <page>-audit.csv. Nothing is trained or written into a "
                        "run directory.")
    rp.add_argument("path", help="dsink run folder (results.json) or run directory")
    rp.add_argument("--out", help="HTML file to write (default PATH/report.html for a dsink run folder, "
                    "RUN-report.html beside a run directory)")
    rp.add_argument("--max-items", type=int, default=200, help="flagged samples shown in the gallery (default 200)")
    rp.set_defaults(func=cmd_report)

    av = sub.add_parser("average", help="naive baseline: average the predictions of an imbalance and a noise run")
    av.add_argument("--imbalance-run", required=True, help="run directory of f_L")
    av.add_argument("--noise-run", required=True, help="run directory of f_N (same data)")
    av.add_argument("--weight", type=float, default=0.5, help="share of f_L's probabilities (default 0.5)")
    av.add_argument("--out", required=True, help="run directory to write")
    av.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    av.add_argument("--allow-unfinished", action="store_true",
                    help="use runs that did not finish training (warns; default: refuse them)")
    av.set_defaults(func=cmd_average)

    au = sub.add_parser("audit", help="rank the training labels a run's surrogate labels reject (CSV)")
    au.add_argument("run", help="run directory (D-SINK: its surrogate labels; other runs: their predictions)")
    au.add_argument("--out", help="CSV path (default RUN/audit.csv)")
    au.add_argument("--top", type=int, default=10, help="flags to print (default 10)")
    au.add_argument("--json", action="store_true", help="also print the summary as JSON")
    au.set_defaults(func=cmd_audit)

    pr = sub.add_parser("predict", help="label new images (a folder or a CSV of paths) or features (.npz) with a run")
    pr.add_argument("run", help="run directory of a trained model")
    pr.add_argument("--data", required=True, help="folder of images (searched recursively), CSV with a path column "
                    "(paths relative to the CSV), or .npz with X for feature runs")
    pr.add_argument("--out", required=True, help="CSV to write: path, predicted label, confidence, p_<class>")
    pr.add_argument("--checkpoint", default="last", choices=("last", "best"),
                    help="last epoch (default) or the selected checkpoint")
    pr.add_argument("--device", help="device (default: the run's)")
    pr.add_argument("--skip-unreadable", action="store_true",
                    help="leave out image files that cannot be decoded (listed in a warning) instead of stopping")
    pr.add_argument("--json", action="store_true", help="also print the summary as JSON")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_predict)

    pl = sub.add_parser("plot", help="PNG figures of a run, a dsink run folder or a claims benchmark JSON")
    pl.add_argument("path", help="run directory, dsink run folder (results.json) or benchmarks/results/claims.json")
    pl.add_argument("--out", help="folder for the PNGs (default PATH/plots, or <json>_plots)")
    pl.add_argument("--embedding", action="store_true", help="also draw the t-SNE of the target's features "
                    "(embedding.png; minutes on large data, so off by default)")
    pl.add_argument("--no-embedding", action="store_true", help=argparse.SUPPRESS)  # the default since the report
    pl.set_defaults(func=cmd_plot)

    e = sub.add_parser("eval", help="evaluate a run directory (rewrites its evaluation report and predictions)")
    e.add_argument("run", help="run directory")
    e.add_argument("--device", help="device to evaluate on (default: the run's)")
    e.add_argument("--json", action="store_true", help="also print the report as JSON")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("data", help="inspect data: a benchmark or your own image folder / features")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dd = dsub.add_parser("describe", help="class counts, imbalance, realised noise rate and transition matrix; for "
                         "image folders the size/mode/format mix and unreadable files")
    _add_config_args(dd)
    _add_flags(dd, "describe")
    dd.add_argument("--json", action="store_true", help="print JSON")
    dd.set_defaults(func=cmd_describe)

    ls = sub.add_parser("list", help="list the registered methods, models, datasets, optimizers, schedules or noise modes")
    ls.add_argument("what", choices=LIST_KINDS)
    ls.set_defaults(func=cmd_list)
    return p


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that a run is marked interrupted and resources are released."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _interrupt_hint(args) -> str:
    import os

    out = getattr(args, "run_dir", None) or "RUN"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.command in ("train", "distill"):
        # torchrun stops every process with SIGTERM when one of them fails: its report names the first failure
        return (f"under torchrun, the launcher stops every process when one fails (its report names the first); "
                f"resume with the same torchrun command and `--resume --out {out}`")
    if args.command == "train":
        return f"resume with `dsink train --resume --out {out}`"
    if args.command == "distill":
        return (f"resume with `dsink distill --imbalance-run {args.imbalance_run} --noise-run {args.noise_run} "
                f"--resume --out {out}`")
    if args.command == "run":
        return "run the same `dsink run` command again: finished models are reused, the interrupted one resumes"
    return "run the command again"


def _os_error_message(e: OSError, args=None) -> str:
    """One line naming the path and the cause of an operating-system error, with what to do about it: only
    options the command accepts (``--out`` where it has one), and how to resume when a run was cut short."""
    import errno

    where = " -> ".join(repr(str(p)) for p in (e.filename, e.filename2) if p is not None) or "a file"
    cause = e.strerror or str(e)
    out = args is not None and hasattr(args, "out")  # the command has --out (eval, data describe do not)
    elsewhere = "write somewhere else (--out, DSINK_CACHE)" if out else "move the label cache elsewhere (DSINK_CACHE)"
    copy = "write elsewhere (--out)" if out else "copy the run to writable storage and run the command on the copy"
    hint = {
        errno.ENOSPC: f"the disk is full: free disk space or {elsewhere}",
        errno.EDQUOT: f"the disk quota is used up: free disk space within your quota or {elsewhere}",
        errno.EIO: f"the disk may be full or failing: free disk space or {elsewhere}",
        errno.EROFS: f"the file system is read-only: {copy}",
        errno.EACCES: ("you lack permission there: choose a folder you can write (--out) or fix its permissions" if out
                       else "you lack permission there: fix its permissions, or copy the run somewhere you can write"),
        errno.EPERM: "the operation is not permitted there: " + ("choose another folder (--out)" if out
                                                                 else "fix its permissions or copy the run"),
        errno.ENOTDIR: "a file stands where a folder is needed: " + ("choose another path (--out)" if out
                                                                     else "move that file away"),
        errno.EEXIST: "a file stands where a folder is needed: " + ("choose another path (--out)" if out
                                                                    else "move that file away"),
        errno.ENOENT: "the folder does not exist or cannot hold files: " + ("choose another path (--out)" if out
                                                                            else "check the path"),
        errno.EISDIR: "a folder stands where a file is needed: choose another path",
    }.get(e.errno, "check the path and the storage")
    resume = _resume_hint(args) if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO) else ""
    return f"{where}: {cause}; {hint}" + (f"; then {resume}" if resume else "")


def _resume_hint(args) -> str:
    """How to continue the run a training command was writing (empty for other commands)."""
    if args is None or args.command not in ("train", "distill", "run"):
        return ""
    if args.command == "run":
        return "run the same `dsink run` command again (finished models are reused)"
    if getattr(args, "run_dir", None) is None:
        return ""
    return _interrupt_hint(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit code (2 for bad input or an operating-system error, 1 for a failed run,
    130 when interrupted, 143 when terminated)."""
    import signal

    from .distributed import PeerLost

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _show_progress_lines()
    old = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        return args.func(args)
    except InputError as e:
        print(f"dsink: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"dsink: error: {_os_error_message(e, args)}", file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"dsink: training failed: {e}", file=sys.stderr)
        return 1
    except PeerLost as e:  # under torchrun: a peer died; say so once per surviving process, no traceback
        print(f"dsink: stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        what = "terminated" if isinstance(e, _Terminated) else "interrupted"
        print(f"dsink: {what}; {_interrupt_hint(args)}", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    finally:
        from .distributed import shutdown

        shutdown()
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _show_progress_lines() -> None:
    """Show the library's plain progress lines (``dsink.progress``: one per epoch where stderr is no terminal,
    instead of progress bars) as they are, on stderr; ``-q`` turns them off with the bars."""
    plain = logging.getLogger("dsink.progress")
    if not plain.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        plain.addHandler(handler)
    plain.setLevel(logging.INFO)
    plain.propagate = False


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
