"""dsink report: the page of a dsink run folder, a photo-folder run and a feature run, checked as parsed HTML
(html.parser) and, in the slow tier, in headless Chromium (the gallery's class filter works)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from dsink.cli import main

from .data.test_images import make_folder

SMALL = ["data.n_max=100", "data.imbalance_ratio=10", "data.noise_rate=0.4", "optim.batch_size=64", "model.width=8",
         "train.track_correction=true", "optim.epochs=2"]
CHROMIUM = "/usr/bin/chromium"
VOID = {"img", "meta", "br", "input", "link", "hr", "source"}


class Node:
    """An element of the parsed page."""

    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, dict(attrs), parent, [], ""

    def iter(self):
        yield self
        for c in self.children:
            yield from c.iter()

    def find_all(self, tag=None, **attrs):
        return [n for n in self.iter() if (tag is None or n.tag == tag)
                and all(n.attrs.get(k.rstrip("_")) == v for k, v in attrs.items())]

    def find(self, tag=None, **attrs):
        found = self.find_all(tag, **attrs)
        return found[0] if found else None

    def classes(self):
        return (self.attrs.get("class") or "").split()

    def all_text(self):
        return self.text + "".join(c.all_text() for c in self.children)


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__()
        self.root = self.cur = Node("#root", {})

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_endtag(self, tag):
        n = self.cur
        while n is not self.root and n.tag != tag:
            n = n.parent
        if n is not self.root:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(Node("#text", {}, self.cur))
        self.cur.children[-1].text = data


def parse(html: str) -> Node:
    b = _Builder()
    b.feed(html)
    return b.root


def _sets(extra):
    return [a for o in extra for a in ("--set", o)]


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A tiny offline-default pipeline (every role, 2 epochs), run once through `dsink run` (which writes the
    report); returns its folder, the cache and the command's stdout."""
    tmp = tmp_path_factory.mktemp("report")
    mp = pytest.MonkeyPatch()
    mp.setenv("DSINK_CACHE", str(tmp / "labels"))
    import contextlib
    import io

    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            code = main(["run", *_sets(SMALL + [f"pipeline.cache_dir={tmp / 'cache'}"]), "--out", str(tmp / "pipe"), "-q"])
    finally:
        mp.undo()
    assert code == 0
    return tmp / "pipe", tmp / "cache", buf.getvalue()


def _selection(run: Path) -> float:
    """A run's noisy-validation balanced accuracy at its selected checkpoint, recomputed from its files."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] \
        if (run / "metrics.jsonl").exists() else []
    if rows:
        return max(r["val_bal_acc"] for r in rows)
    with np.load(run / "predictions.npz") as z:
        pred, y = z["best_val_probs"].argmax(1), z["val_noisy"]
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))


def test_run_ends_with_a_report_of_every_section(pipeline):
    pipe, _, stdout = pipeline
    assert f"report: {pipe / 'report.html'}" in stdout
    html = (pipe / "report.html").read_text()
    assert len(html.encode()) < 5 * 2**20
    dom = parse(html)
    res = json.loads((pipe / "results.json").read_text())
    # the results table: one row per method, in order; exactly the row dsink run chose to deploy marked
    rows = dom.find("table", id="results-table").find("tbody").find_all("tr")
    assert [r.attrs["data-method"] for r in rows] == [r["method"] for r in res["rows"]]
    scores = [np.mean([_selection(Path(d)) for d in r["runs"]]) for r in res["rows"]]
    marked = [i for i, r in enumerate(rows) if "deploy" in r.classes()]
    assert marked == [[r["method"] for r in res["rows"]].index(res["deploy"]["method"])]
    assert res["deploy"]["rule"] in html
    assert dom.find(id="deploy-method").all_text() == res["rows"][marked[0]]["method"]
    top1 = [td.all_text() for td in rows[0].find_all("td")]
    assert f"{100 * res['rows'][0]['top1']:.2f}" in top1 and f"{100 * scores[0]:.2f}" in top1
    assert dom.find(id="split").attrs["data-split"] == "test"
    # four figures, embedded
    figs = dom.find_all("figure", class_="fig")
    assert [f.attrs["id"] for f in figs] == ["fig-per-class", "fig-correction", "fig-validation", "fig-confusion"]
    assert all(f.find("img").attrs["src"].startswith("data:image/png;base64,") for f in figs)
    # per-class table: every class with its training size
    info = json.loads((Path(res["rows"][-1]["runs"][0]) / "eval.json").read_text())
    cls = dom.find("table", id="class-table").find("tbody").find_all("tr")
    assert [r.find("td").all_text() for r in cls] == info["class_names"]
    assert [int(r.find_all("td")[1].all_text().replace(",", "")) for r in cls] == info["train_class_counts"]


def test_gallery_shows_the_audit_with_thumbnails_from_the_arrays(pipeline):
    pipe, _, _ = pipeline
    dom = parse((pipe / "report.html").read_text())
    with open(pipe / "report-audit.csv") as f:
        audit = list(csv.DictReader(f))
    items = dom.find("div", id="gallery-items").find_all("figure")
    assert audit and len(items) == min(200, len(audit))
    assert dom.find(id="flagged").all_text() == f"{len(audit):,}"
    for item, row in zip(items, audit):
        assert item.attrs["data-given"] == row["given_label"] and item.attrs["data-suggested"] == row["suggested_label"]
        assert item.attrs["data-given"] != item.attrs["data-suggested"]
        text = item.all_text()
        assert f"given: {row['given_name']}" in text and f"suggested: {row['suggested_name']}" in text
        assert f"margin {float(row['margin']):.3f}" in text
        assert item.find("img").attrs["src"].startswith("data:image/png;base64,")
    # a thumbnail is the sample's own pixels: the source image at the run's stored dataset index
    import base64
    import io

    from PIL import Image

    from dsink.data.sources import load_fashion_mnist

    src = load_fashion_mnist()
    img = Image.open(io.BytesIO(base64.b64decode(items[0].find("img").attrs["src"].split(",", 1)[1])))
    assert np.array_equal(np.asarray(img), src.train_x[int(audit[0]["dataset_index"]), 0])
    # the class filter offers every class, with the number of items given that class
    opts = dom.find("select", id="filter-given").find_all("option")
    assert [o.attrs["value"] for o in opts] == ["all"] + [str(c) for c in range(10)]
    n3 = sum(r["given_label"] == "3" for r in audit[:200])
    assert opts[4].all_text().endswith(f"({n3})")


def test_the_page_needs_no_network_and_the_report_writes_nothing_into_runs(pipeline, tmp_path, capsys):
    pipe, cache, _ = pipeline
    before = _snapshot(cache)
    out = tmp_path / "r" / "page.html"
    assert main(["report", str(pipe), "--out", str(out), "--max-items", "5"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert _snapshot(cache) == before
    assert (tmp_path / "r" / "page-audit.csv").is_file()
    html = out.read_text()
    dom = parse(html)
    assert len(dom.find("div", id="gallery-items").find_all("figure")) == 5
    for n in dom.iter():
        for key in ("src", "href"):
            if key in n.attrs:
                assert n.attrs[key].startswith("data:") or n.attrs[key] == "page-audit.csv", n.attrs[key]
    assert not re.search(r"https?://", html)
    assert "default-src 'none'" in dom.find("meta", **{"http-equiv": "Content-Security-Policy"}).attrs["content"]


def test_without_matplotlib_the_page_keeps_its_tables(pipeline, tmp_path, monkeypatch):
    from dsink.report import figures, write_report

    monkeypatch.setattr(figures, "have_matplotlib", lambda: False)
    dom = parse(write_report(pipeline[0], tmp_path / "r.html").read_text())
    assert not dom.find_all("figure", class_="fig")
    assert "matplotlib is not installed" in dom.find(id="no-figures").all_text()
    assert len(dom.find("table", id="results-table").find("tbody").find_all("tr")) == 6
    assert dom.find("table", id="class-table") is not None


def test_health_entries_are_listed(pipeline, tmp_path):
    from dsink.report import write_report

    res = json.loads((pipeline[0] / "results.json").read_text())
    res["health"] = {"ok": False, "warnings": [{"role": "imbalance", "kind": "blind_class", "classes": [9],
                                                "message": "f_L (la): predicts class 9 for no sample", "seeds": [0]}]}
    res["rows"][2]["health"] = [{"message": "selected at epoch 1"}]
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(res))
    dom = parse(write_report(folder).read_text())
    assert [li.all_text() for li in dom.find("section", id="health").find_all("li")] == \
        ["f_L (la): predicts class 9 for no sample (seeds 0)", "f_N (gce): selected at epoch 1"]
    assert dom.find("section", id="health") is not None
    own = json.loads((pipeline[0] / "results.json").read_text())["health"]  # the run's own check: a section iff warned
    assert (parse((pipeline[0] / "report.html").read_text()).find("section", id="health") is None) == own["ok"]


def test_relative_run_paths_are_found_from_another_folder(tmp_path, monkeypatch, capsys):
    """dsink run names its runs relative to where it ran: a report from elsewhere still finds them."""
    monkeypatch.chdir(tmp_path)
    assert main(["run", *_sets(SMALL + ["pipeline.combined=[]", "pipeline.baselines=[]"]), "--epochs", "1", "--out", "res", "-q"]) == 0
    capsys.readouterr()
    rows = json.loads((tmp_path / "res" / "results.json").read_text())["rows"]
    assert not Path(rows[0]["runs"][0]).is_absolute()
    monkeypatch.chdir(tmp_path / "res")
    assert main(["report", ".", "--out", str(tmp_path / "r.html")]) == 0
    dom = parse((tmp_path / "r.html").read_text())
    assert len(dom.find("div", id="gallery-items").find_all("figure")) > 0
    assert len(dom.find("table", id="class-table").find("thead").find_all("th")) == 2 + len(rows)
    (tmp_path / "runs").rename(tmp_path / "moved")
    assert main(["report", ".", "--out", str(tmp_path / "r.html")]) == 2
    assert "is not found; run dsink report from the folder dsink run ran in" in capsys.readouterr().err


def test_report_errors(pipeline, tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "neither results.json nor eval.json" in capsys.readouterr().err
    run = json.loads((pipeline[0] / "results.json").read_text())["rows"][0]["runs"][0]
    assert main(["report", str(pipeline[0]), "--out", f"{run}/r.html"]) == 2
    assert "inside a run directory" in capsys.readouterr().err
    assert main(["report", str(pipeline[0]), "--max-items", "-1"]) == 2
    assert "--max-items must be >= 0" in capsys.readouterr().err


def test_a_photo_folder_run_shows_its_photos(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = make_folder(tmp_path / "photos", counts=(10, 10, 6))
    folder = ["data.dataset=image_folder", f"data.root={root}", "data.image_size=16", "data.noise_mode=none",
              "data.imbalance_ratio=1", "optim.batch_size=8", "model.name=small_cnn", "model.width=4"]
    assert main(["train", *_sets(folder), "--method", "ce", "--epochs", "1", "--out", "run", "-q"]) == 0
    capsys.readouterr()
    assert main(["report", "run"]) == 0
    assert capsys.readouterr().out.strip() == "run-report.html"
    dom = parse((tmp_path / "run-report.html").read_text())
    with open(tmp_path / "run-report-audit.csv") as f:
        audit = list(csv.DictReader(f))
    items = dom.find("div", id="gallery-items").find_all("figure")
    assert audit and len(items) == len(audit)
    for item, row in zip(items, audit):
        assert row["path"].startswith(str(root)) and Path(row["path"]).is_file()
        assert item.find("img").attrs["src"].startswith("data:image/jpeg;base64,")
        assert "/".join(Path(row["path"]).parts[-2:]) in item.all_text()  # class folder and file
    assert dom.find(id="split").attrs["data-split"] == "val"  # a folder without a test split
    assert "no clean test split" not in dom.find("header").all_text().replace("no clean test set", "")
    assert len(dom.find("table", id="results-table").find("tbody").find_all("tr")) == 1


def test_feature_data_shows_rows_without_images(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "f.npz", X=rng.normal(size=(90, 4)).astype(np.float32), y=np.repeat(np.arange(3), 30),
             X_test=rng.normal(size=(12, 4)).astype(np.float32), y_test=np.repeat(np.arange(3), 4))
    feats = ["data.dataset=npz", f"data.root={tmp_path / 'f.npz'}", "data.noise_mode=none", "data.imbalance_ratio=1",
             "model.name=mlp", "model.width=8"]
    assert main(["train", *_sets(feats), "--method", "ce", "--epochs", "1", "--out", "run", "-q"]) == 0
    assert main(["report", "run", "--out", "feat.html"]) == 0
    dom = parse((tmp_path / "feat.html").read_text())
    grid = dom.find("div", id="gallery-items")
    items = grid.find_all("figure")
    assert items and "rows" in grid.classes() and not grid.find_all("img")
    assert "feature data: no images" in dom.find("section", id="gallery").all_text()


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-extensions", *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": os.environ.get("HOME", "/tmp")})


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)")
def test_the_page_in_headless_chromium(pipeline, tmp_path):
    pipe = pipeline[0]
    page = tmp_path / "report.html"  # a copy: Chromium writes nothing beside the pipeline's own page
    shutil.copy(pipe / "report.html", page)
    url = page.as_uri()
    shot = tmp_path / "shot.png"
    r = _chromium("--window-size=1280,3000", f"--screenshot={shot}", url)
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000, r.stderr

    def shown(hash_: str) -> tuple[list[Node], Node]:
        out = _chromium("--virtual-time-budget=3000", "--dump-dom", url + hash_).stdout
        dom = parse(out)
        grid = dom.find("div", id="gallery-items")
        return [f for f in grid.find_all("figure") if "hidden" not in f.attrs], dom

    everything, dom = shown("")
    assert len(dom.find("table", id="results-table").find("tbody").find_all("tr")) == 6
    items = dom.find("div", id="gallery-items").find_all("figure")
    assert len(everything) == len(items) and dom.find(id="shown-count").all_text() == str(len(items))
    given = [f.attrs["data-given"] for f in items]
    cls = max(set(given), key=given.count)
    filtered, dom = shown(f"#class={cls}")
    assert 0 < len(filtered) < len(items) and len(filtered) == given.count(cls)
    assert all(f.attrs["data-given"] == cls for f in filtered)
    assert dom.find(id="shown-count").all_text() == str(len(filtered))
    assert dom.find("select", id="filter-given") is not None
    # sorting by the smallest margin first reverses the page's order of the visible items
    ordered, _ = shown("#sort=margin-asc")
    margins = [float(f.attrs["data-margin"]) for f in ordered]
    assert margins == sorted(margins) and len(ordered) == len(items)
