"""The report page: one self-contained HTML document (inline CSS and JavaScript from ``assets/``, images as data
URIs, a Content-Security-Policy that forbids every network request)."""

from __future__ import annotations

from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from ..eval.evaluate import NO_TEST_NOTE

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
COLUMNS = (("selection", "noisy-val bal. acc (selection)"), ("top1", "top-1"), ("macro_f1", "macro-F1"),
           ("many_acc", "many"), ("medium_acc", "medium"), ("few_acc", "few"),
           ("correction_rate", "label correction"), ("top1_best_val", "top-1 @selected"))


def asset(name: str) -> str:
    """The text of a file of ``dsink/report/assets``."""
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def pct(v: float | None, std: float | None = None) -> str:
    """A share as a percentage with two decimals (``-`` for None), ``± std`` when given."""
    if v is None:
        return "-"
    return f"{100 * v:.2f}" + (f" ± {100 * std:.2f}" if std else "")


def _e(v: Any) -> str:
    return escape(str(v), quote=True)


def header(r: dict[str, Any]) -> str:
    """Title, source folder, and which split the figures come from."""
    split = r["split"]
    if split == "test":
        banner = ('<p id="split" class="banner test" data-split="test">The figures come from the <b>clean test set</b>; '
                  "the model to deploy was chosen without it, on the noisy validation split.</p>")
    else:
        banner = ('<p id="split" class="banner val" data-split="val">The data has no clean test set: the figures come '
                  "from the <b>noisy validation split</b> (given labels, which hold label noise), the same split that "
                  "selected the checkpoints. Add a clean test set for unbiased figures.</p>")
    notes = "".join(f'<p class="notice">{_e(n)}</p>' for n in r.get("notes", []) if n != NO_TEST_NOTE)  # the banner
    return (f"<header><h1>dsink report</h1><p class=\"meta\">{_e(r['source'])} &middot; {_e(r['dataset'])} &middot; "
            f"written {_e(r['written'])}</p>{banner}{notes}</header>")


def deploy_section(r: dict[str, Any]) -> str:
    """Which row to deploy and why."""
    i = r["deploy"]
    if i is None:
        return ('<section id="deploy"><h2>Model to deploy</h2><p class="notice">No run has a validation score, so no '
                "row is recommended.</p></section>")
    row = r["rows"][i]
    epochs = [e for e in row.get("selected_epochs", []) if e]
    at = f" (epoch {', '.join(map(str, epochs))})" if epochs else ""
    what = (f"its selected checkpoint, <code>{_e(r.get('best_checkpoint', ''))}</code>" + at) if epochs else "its predictions"
    why = (f"Chosen as {_e(r['deploy_rule'])}" if r.get("deploy_rule") else
           f"It has the best class-balanced accuracy on the noisy validation split ({pct(row['selection'])} %)")
    return (f'<section id="deploy"><h2>Model to deploy</h2><div class="deploy-box"><p>Deploy <b id="deploy-method">'
            f"{_e(row['method'])}</b>: {what}. {why}; no test label was used to choose it. Its {r['split_name']} "
            f"top-1 there: <b>{pct(row.get('top1_best_val'))} %</b>.</p></div></section>")


def results_table(r: dict[str, Any]) -> str:
    """The results table, one row per method, the row to deploy marked."""
    multi = any(len(row.get("seeds", [])) > 1 for row in r["rows"])
    head = "".join(f"<th>{_e(h)}</th>" for _, h in COLUMNS)
    body = []
    for i, row in enumerate(r["rows"]):
        mark = i == r["deploy"]
        cells = "".join(f"<td>{pct(row.get(k), row.get(k + '_std') if multi else None)}</td>" for k, _ in COLUMNS)
        badge = '<span class="badge">deploy</span>' if mark else ""
        cls = ' class="deploy"' if mark else ""
        body.append(f'<tr data-method="{_e(row["method"])}" data-role="{_e(row["role"])}"{cls}><td>{_e(row["method"])}{badge}</td>'
                    f'<td class="text">{_e(row["role"])}</td><td>{len(row.get("seeds", []))}</td>{cells}</tr>')
    std = " Mean ± std over the seeds." if multi else ""
    return (f'<section id="results"><h2>Results</h2><p>Percent on the {r["split_name"]} (last epoch unless said '
            f"otherwise); <i>noisy-val bal. acc</i> is the selection score, <i>top-1 @selected</i> the top-1 of the "
            f'checkpoint it selects.{std}</p><div class="scroll"><table id="results-table"><thead><tr><th>method</th>'
            f'<th class="text">role</th><th>seeds</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
            "</section>")


def health_section(lines: list[str]) -> str:
    """The auxiliaries' health warnings (when the results carry them)."""
    if not lines:
        return ""
    items = "".join(f"<li>{_e(s)}</li>" for s in lines)
    return f'<section id="health"><h2>Health of the auxiliaries</h2><ul class="health">{items}</ul></section>'


def labels_section(r: dict[str, Any]) -> str:
    """How many training labels are wrong, how many the target corrects, how many the audit flags."""
    t, g = r.get("train_labels"), r.get("gallery") or {}
    s = g.get("summary") or {}
    parts = []
    n = s.get("num_train")
    if t and n:
        noisy = round(t["noise_rate"] * n)
        fixed = round((t.get("correction_rate") or 0) * noisy)
        parts.append(f"Of the {n:,} training labels, {noisy:,} are wrong ({pct(t['noise_rate'])} %). "
                     f"{_e(r['target_name'])} predicts the true label for <b id=\"corrected\">{fixed:,}</b> of them "
                     f"({pct(t.get('correction_rate'))} %).")
    if s:
        q = s.get("overall")
        quality = f" (precision {pct(q['precision'])} %, recall {pct(q['recall'])} % against the known noise)" if q else ""
        parts.append(f"The label audit ({_e(s['source'])} of {_e(r['target_name'])}) flags "
                     f"<b id=\"flagged\">{s['flagged']:,}</b> of {s['num_train']:,} training labels{quality}.")
    if not parts:
        return ""
    return f'<section id="labels"><h2>Labels</h2><p>{" ".join(parts)}</p></section>'


def figures_section(figs: list[tuple[str, str, str]], missing: str) -> str:
    """The figures (id, data URI, caption), or a notice saying why there are none."""
    if missing:
        return f'<section id="figures"><h2>Figures</h2><p class="notice" id="no-figures">{_e(missing)}</p></section>'
    body = "".join(f'<figure class="fig" id="{_e(i)}"><img alt="{_e(c)}" src="{uri}"><figcaption>{_e(c)}</figcaption>'
                   "</figure>" for i, uri, c in figs)
    return f'<section id="figures"><h2>Figures</h2><div class="figs">{body}</div></section>'


def class_table(r: dict[str, Any]) -> str:
    """Per-class accuracy of every method next to the class's training size."""
    pc = r.get("per_class")
    if not pc:
        return ""
    methods = list(pc["acc"])
    head = "".join(f"<th>{_e(m)}</th>" for m in methods)
    rows = []
    for c, (name, n) in enumerate(zip(pc["names"], pc["counts"])):
        cells = "".join(f"<td>{pct(pc['acc'][m][c])}</td>" for m in methods)
        rows.append(f'<tr data-class="{c}"><td>{_e(name)}</td><td>{n:,}</td>{cells}</tr>')
    return (f'<section id="classes"><h2>Per-class accuracy</h2><p>Accuracy (%) of each class on the '
            f'{r["split_name"]}, last epoch, against the class\'s training size (true labels).</p><div class="scroll">'
            f'<table id="class-table"><thead><tr><th>class</th><th>training size</th>{head}</tr></thead><tbody>'
            f'{"".join(rows)}</tbody></table></div></section>')


def _options(names: list[str], counts: dict[int, int]) -> str:
    return '<option value="all">all</option>' + "".join(
        f'<option value="{c}">{_e(n)} ({counts.get(c, 0)})</option>' for c, n in enumerate(names))


def _gallery_item(it: dict[str, Any]) -> str:
    img = f'<img alt="training sample {it["position"]}" src="{it["image"]}">' if it["image"] else ""
    truth = ""
    if "truly_mislabelled" in it:
        truth = f'<div class="truth">{"truly mislabelled" if it["truly_mislabelled"] else "label was right"}</div>'
    where = f'<div class="truth" title="{_e(it["path"])}">{_e("/".join(Path(it["path"]).parts[-2:]))}</div>' \
        if it["path"] else ""
    return (f'<figure class="item" data-rank="{it["rank"]}" data-given="{it["given"]}" data-suggested="{it["suggested"]}" '
            f'data-margin="{it["margin"]:.6f}" data-confidence="{it["confidence"]:.6f}">{img}<figcaption>'
            f'#{it["rank"]} &middot; sample {it["position"]}<div class="given">given: {_e(it["given_name"])}</div>'
            f'<div class="suggested">suggested: {_e(it["suggested_name"])}</div>'
            f'<div>margin {it["margin"]:.3f}</div>{truth}{where}</figcaption></figure>')


def gallery_section(r: dict[str, Any]) -> str:
    """The flagged training samples with filter and sort controls."""
    g = r.get("gallery")
    if g is None:
        why = r.get("gallery_error") or "no run to audit"
        return f'<section id="gallery"><h2>Flagged training samples</h2><p class="notice">{_e(why)}</p></section>'
    items, names = g["items"], r["class_names"]
    shown, total = len(items), g["summary"]["flagged"]
    given = {c: sum(it["given"] == c for it in items) for c in range(len(names))}
    sugg = {c: sum(it["suggested"] == c for it in items) for c in range(len(names))}
    note = f'<p class="notice">{_e(g["note"])}</p>' if g.get("note") else ""
    cap = (f"the {shown} with the largest margin q[suggested] - q[given] of {total:,} flagged; the full ranked list is "
           f'<a href="{_e(g["csv_name"])}">{_e(g["csv_name"])}</a> beside this page')
    sorts = (("margin-desc", "margin, largest first"), ("margin-asc", "margin, smallest first"),
             ("confidence-desc", "confidence of the suggestion"), ("given", "given class"), ("suggested", "suggested class"))
    sort_opts = "".join(f'<option value="{k}">{_e(v)}</option>' for k, v in sorts)
    rows = "" if g["images"] != "none" else ' class="rows"'
    return (f'<section id="gallery"><h2>Flagged training samples</h2><p>Training samples whose given label the '
            f"audit rejects: {cap}. Check them by hand.</p>{note}<div class=\"controls\">"
            f'<label>given class <select id="filter-given">{_options(names, given)}</select></label>'
            f'<label>suggested class <select id="filter-suggested">{_options(names, sugg)}</select></label>'
            f'<label>sort by <select id="sort">{sort_opts}</select></label>'
            f'<span>showing <b id="shown-count">{shown}</b> of {shown}</span></div>'
            f'<div id="gallery-items" data-total="{shown}" data-shown="{shown}"{rows}>'
            f'{"".join(_gallery_item(it) for it in items)}</div></section>')


def render(r: dict[str, Any]) -> str:
    """The whole page."""
    body = (header(r) + deploy_section(r) + results_table(r) + health_section(r.get("health", []))
            + labels_section(r) + figures_section(r.get("figures", []), r.get("figures_missing", ""))
            + class_table(r) + gallery_section(r))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>dsink report: {_e(r['title'])}</title><style>{asset('report.css')}</style></head>"
            f"<body>{body}<script>{asset('report.js')}</script></body></html>\n")
