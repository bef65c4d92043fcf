"""``dsink report``: one self-contained HTML page about a ``dsink run`` folder or a run directory.

The page holds the results table with the row to deploy (chosen on the noisy validation split, see
:mod:`.collect`), the auxiliaries' health warnings when the results carry them, how many training labels the
target corrects and the audit flags, figures (per-class accuracy against class size, label-correction and
validation curves per epoch, the target's confusion matrix; matplotlib is optional), a per-class table, and a
gallery of the flagged training samples with thumbnails, filterable and sortable in the browser.

A report reads run directories through :class:`~dsink.runs.RunDir` and :mod:`dsink.eval`; it never trains and
never writes into a run directory: it writes the page and, beside it, the audit's full ranked list as CSV.
docs/report.md describes how to read it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..fileio import atomic_write_text
from ..runs import RunDir
from . import collect, figures
from .gallery import MAX_ITEMS, gallery
from .page import render

log = logging.getLogger(__name__)

__all__ = ["MAX_ITEMS", "build_report", "default_report_path", "write_report"]


def default_report_path(path: str | Path) -> Path:
    """``PIPELINE/report.html`` for a ``dsink run`` folder; ``<run>-report.html`` beside a run directory (a report
    never writes into a run directory)."""
    path = Path(path)
    if (path / "results.json").is_file():
        return path / "report.html"
    return path.parent / f"{path.name}-report.html"


def _audited_row(rows: list[dict[str, Any]], deploy: int | None) -> dict[str, Any]:
    """The row whose first run the gallery audits: the D-SINK target, else the row to deploy, else the first."""
    target = next((r for r in rows if r.get("role") == "target"), None)
    return target or rows[deploy if deploy is not None else 0]


def _figures(r: dict[str, Any], target: str) -> list[tuple[str, str, str]]:
    highlight = r["rows"][r["deploy"]]["method"] if r["deploy"] is not None else None
    out = []
    if r.get("per_class"):
        out.append(("fig-per-class", figures.per_class_figure(r["per_class"], r["split_name"], highlight),
                    f"Per-class {r['split_name']} accuracy against the class's training size"))
    for key, fid, ylabel, title in (
            ("train_correction", "fig-correction", "noisy training labels predicted as the true label (%)",
             "Label correction per epoch"),
            (collect.SELECTION_KEY, "fig-validation", "class-balanced accuracy on the noisy validation split (%)",
             "Validation (the selection score) per epoch")):
        c = r["curves"].get(key)
        if c:
            out.append((fid, figures.curve_figure(c, ylabel, title, highlight), title))
    if r.get("confusion"):
        split = "clean test set" if r["confusion"]["split"] == "test" else "noisy validation split"
        out.append(("fig-confusion", figures.confusion_figure(r["confusion"], f"{target}, last epoch, {split}"),
                    f"Confusion matrix of {target} on the {split}"))
    return out


def build_report(path: str | Path, out: str | Path | None = None, *, max_items: int = MAX_ITEMS) -> dict[str, Any]:
    """Everything the page shows (see the module docstring), with the audit CSV written beside ``out``."""
    path = Path(path)
    out = Path(out) if out else default_report_path(path)
    res = collect.read_results(path)
    rows = [dict(row) for row in res["rows"]]
    split = "test" if set(res.get("evaluated_on") or ["test"]) == {"test"} else "val"
    r: dict[str, Any] = {"source": str(path), "title": path.name, "rows": rows, "split": split,
                         "split_name": "clean test set" if split == "test" else "noisy validation split",
                         "notes": res.get("notes", []), "written": time.strftime("%Y-%m-%d %H:%M")}
    r["deploy"] = collect.mark_deploy(rows, (res.get("deploy") or {}).get("method"))
    r["deploy_rule"] = (res.get("deploy") or {}).get("rule")
    r["health"] = collect.health_items(res.get("health")) + [
        line for row in rows for line in collect.health_items(row.get("health"), f"{row['method']}: ")]
    r["per_class"] = collect.per_class(rows)
    r["curves"] = {k: collect.curves(rows, k) for k in collect.CURVE_KEYS}
    audited = _audited_row(rows, r["deploy"])
    run = RunDir(audited["runs"][0])
    r["best_checkpoint"] = str(run.checkpoint_path("best").relative_to(run.path))  # named by the run layout
    r["target_name"] = audited["method"]
    r["train_labels"] = collect.training_labels(run)
    r["confusion"] = collect.confusion(run)
    info = run.read_eval()
    r["class_names"] = info.get("class_names") or [str(c) for c in range(info["num_classes"])]
    r["dataset"] = _dataset_name(run)
    csv_path = out.with_name(out.stem + "-audit.csv")
    try:
        r["gallery"] = gallery(run, csv_path, max_items)
        r["gallery"]["csv_name"] = csv_path.name
    except InputError as e:
        log.warning("no gallery of flagged samples: %s", e)
        r["gallery"], r["gallery_error"] = None, f"No gallery of flagged samples: {e}"
    if figures.have_matplotlib():
        r["figures"] = _figures(r, audited["method"])
    else:
        r["figures_missing"] = ("matplotlib is not installed, so this page has tables but no figures; install it "
                                "with pip install 'dsink[plot]' and write the report again")
    return r


def _dataset_name(run: RunDir) -> str:
    cfg_run = run if run.has_config() else RunDir(run.average_sources()[1])
    try:
        return cfg_run.load_config().data.dataset
    except InputError:
        return "unknown data"


def write_report(path: str | Path, out: str | Path | None = None, *, max_items: int = MAX_ITEMS) -> Path:
    """Write the report page of a ``dsink run`` folder or run directory ``path`` to ``out`` (default
    :func:`default_report_path`) and the audit's full ranked list beside it (``<out stem>-audit.csv``); returns
    the page's path. Refuses an ``out`` inside a run directory."""
    path = Path(path)
    out = Path(out) if out else default_report_path(path)
    if max_items < 0:
        raise InputError(f"--max-items must be >= 0 (flagged samples shown in the gallery), got {max_items}")
    if RunDir(out.parent).is_run():
        raise InputError(f"--out {str(out)!r} is inside a run directory; a report never writes there: choose a file "
                         "elsewhere")
    if out.exists() and out.is_dir():
        raise InputError(f"--out {str(out)!r} is a folder; name the HTML file to write, e.g. {out / 'report.html'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    r = build_report(path, out, max_items=max_items)
    atomic_write_text(out, render(r))
    return out
