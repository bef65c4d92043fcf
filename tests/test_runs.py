"""Run directories: RunDir owns the layout and its I/O; a distillation stands alone once trained; a pipeline's cache
is keyed by what its runs are, not by where they lie."""

import ast
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from dsink.cli import main
from dsink.config import load_config
from dsink.errors import InputError
from dsink.runs import RunDir
from dsink.train import distill_config, train_run

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ("eval.json", "predictions.npz", "metrics.jsonl", "config.yaml", "run.json", "checkpoints", "last.pt",
             "best.pt")
SMALL = ["data.n_max=150", "data.imbalance_ratio=10", "data.noise_rate=0.3", "optim.batch_size=64", "model.name=mlp",
         "model.width=16", "optim.lr=0.05", "optim.epochs=1"]


# --------------------------------------------------------------------------- RunDir
def test_metrics_rows_append_read_and_truncate(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    assert run.read_metrics() == [] and run.epochs_done() is None
    for e in (1, 2, 3):
        run.append_metrics({"epoch": e, "loss": 1.0 / e})
    with open(run.path / run.METRICS, "a") as f:
        f.write('{"epoch": 4, "lo')  # a torn last line from a crash
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2, 3] and run.epochs_done() == 3
    run.write_metrics(run.read_metrics(upto=2))
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]


def test_status_wipe_and_average_kind(tmp_path):
    run = RunDir(tmp_path / "avg")
    assert not run.is_run() and run.state() == "unknown"
    run.path.mkdir()
    run.start_average("a", "b", 0.3)
    assert run.is_average and run.is_run() and not run.has_config()
    assert run.average_sources() == ("a", "b", 0.3)
    assert run.state() == "stopped"  # marked running, but nobody holds its lock
    with run.lock():
        assert run.state() == "running" and run.is_locked()
    run.write_status(status="finished")
    run.require_finished("average")
    (run.path / "keep.txt").write_text("not a run file")
    run.checkpoint_path("best").parent.mkdir()
    run.wipe()
    assert sorted(p.name for p in run.path.iterdir()) == [".lock", "keep.txt"]
    with pytest.raises(InputError, match="lacks imbalance_run/noise_run"):
        run.average_sources()
    with pytest.raises(ValueError, match="checkpoint 'middle'"):
        run.checkpoint_path("middle")


def test_inputs_round_trip_and_validation(tmp_path):
    run = RunDir(tmp_path / "r")
    probs = {"imbalance": np.full((4, 3), 1 / 3), "noise": np.eye(3)[[0, 1, 2, 0]]}
    run.write_inputs(probs, "fp")
    got, fp, scores = run.read_inputs()
    assert fp == "fp" and sorted(got) == ["imbalance", "noise"] and scores == {}
    assert np.allclose(got["noise"], probs["noise"]) and got["noise"].dtype == np.float32
    run.write_inputs({"imbalance": np.full((4, 3), np.nan)}, "fp")
    with pytest.raises(InputError, match="imbalance_train_probs is not a finite"):
        run.read_inputs()


def test_resume_may_move_the_auxiliaries_only_once_their_inputs_are_stored(tmp_path):
    cfg = load_config(None, ["method.name=kd", "method.params.imbalance_run=/a", "method.params.noise_run=/b"])
    moved = load_config(None, ["method.name=kd", "method.params.imbalance_run=/x/a", "method.params.noise_run=/x/b"])
    run = RunDir(tmp_path / "r")
    assert run.prepare(cfg, resume=False, force=False)
    with pytest.raises(InputError, match="differs in method.params"):
        run.prepare(moved, resume=True, force=False)
    assert run.prepare(moved, resume=True, force=False, ignore_params=("imbalance_run", "noise_run"))


# --------------------------------------------------------------------------- a distillation stands alone
@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    base = tmp_path_factory.mktemp("alone")
    over = SMALL + [f"data.cache_dir={base / 'cache'}", "train.track_correction=true"]
    for m in ("la", "gce"):
        train_run(load_config(None, over + [f"method.name={m}"]), base / m)
    for name in ("dsink", "kd"):
        train_run(distill_config(base / "la", base / "gce", None, [f"method.name={name}"]), base / name)
    return base


def test_a_distilled_run_is_evaluated_audited_and_plotted_without_its_auxiliaries(distilled, tmp_path, capsys):
    base = distilled
    before = {n: RunDir(base / n).read_eval()["last"]["top1"] for n in ("dsink", "kd")}
    for name in ("dsink", "kd"):
        assert RunDir(base / name).has_inputs()
    away = tmp_path / "away"
    away.mkdir()
    for m in ("la", "gce"):
        shutil.move(str(base / m), str(away / m))
    try:
        for name in ("dsink", "kd"):
            run = base / name
            assert main(["eval", str(run), "--json"]) == 0
            report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
            assert report["last"]["top1"] == pytest.approx(before[name])
            assert main(["plot", str(run), "--out", str(tmp_path / f"plots-{name}"), "--embedding"]) == 0
            names = sorted(Path(p).name for p in capsys.readouterr().out.split())
            assert names == ["correction.png", "embedding.png", "per_class.png"]
        assert main(["audit", str(base / "dsink"), "--out", str(tmp_path / "audit.csv")]) == 0
        assert "rejected by the surrogate labels" in capsys.readouterr().out
        # and a resume of the finished run reuses it, although the paths in its config lead nowhere
        cfg = distill_config(away / "la", away / "gce", None, ["method.name=dsink"])
        assert train_run(cfg, base / "dsink", resume=True)["last"]["top1"] == pytest.approx(before["dsink"])
    finally:
        for m in ("la", "gce"):
            shutil.move(str(away / m), str(base / m))


# --------------------------------------------------------------------------- the cache is keyed by identity
def test_a_moved_pipeline_cache_retrains_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sets = [a for o in ["data.n_max=100", "data.imbalance_ratio=10", "data.noise_rate=0.3", "optim.batch_size=64",
                        "model.width=8", "pipeline.baselines=[]", "pipeline.combined=[average,kd]"]
            for a in ("--set", o)]

    def run(cache):
        assert main(["run", *sets, "--set", f"pipeline.cache_dir={cache}", "--epochs", "1", "--out", "res", "-q"]) == 0
        capsys.readouterr()
        return json.loads((tmp_path / "res" / "results.json").read_text())

    first = run(tmp_path / "a" / "cache")
    shutil.move(str(tmp_path / "a"), str(tmp_path / "b"))
    ckpts = sorted((tmp_path / "b" / "cache").glob("*/checkpoints/last.pt"))
    assert len(ckpts) == 4  # f_L, f_N, kd, D-SINK
    before = {p: p.stat().st_mtime_ns for p in ckpts}
    second = run(tmp_path / "b" / "cache")
    assert {p: p.stat().st_mtime_ns for p in ckpts} == before  # nothing trained again
    assert sorted(p.name for p in (tmp_path / "b" / "cache").iterdir()) == sorted(
        Path(d).name for r in first["rows"] for d in r["runs"])  # the same folders, no new one
    assert [r["top1"] for r in second["rows"]] == [r["top1"] for r in first["rows"]]


# --------------------------------------------------------------------------- one owner of the layout
def _string_literals(tree: ast.AST):
    """String constants that are not docstrings (f-string parts included), with their line numbers."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_only_the_run_directory_type_names_run_files():
    """No module outside dsink/runs/ names a run file: each reader and writer goes through RunDir."""
    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(n) for n in RUN_FILES) + r")(?![\w-])")
    files = [p for p in (ROOT / "src" / "dsink").rglob("*.py") if "runs" not in p.relative_to(ROOT / "src").parts]
    files += sorted(p for d in ("benchmarks", "studies") for p in (ROOT / d).glob("*.py"))
    found = []
    for path in files:
        source = path.read_text().splitlines()
        for line, text in _string_literals(ast.parse("\n".join(source))):
            hit = pattern.search(text)
            if hit and hit.group(1) == "checkpoints" and "torch.hub.get_dir()" in source[line - 1]:
                continue  # torch hub's own cache folder of downloaded weights, not a run's
            # "checkpoints" is also an English word: only its use as a path component counts
            if hit and (hit.group(1) != "checkpoints" or text.strip() == "checkpoints" or "checkpoints/" in text):
                found.append(f"{path.relative_to(ROOT)}:{line}: {text!r}")
    assert not found, "run files named outside dsink.runs:\n" + "\n".join(found)


def test_no_spec_reference_remains():
    """Users do not have SPEC.md: the sources and docs link to docs/ sections instead."""
    files = [p for d in ("src", "docs") for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".md")]
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
            if "SPEC" in line]
    assert not hits, hits


def test_large_predictions_are_memory_mapped(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    arrays = {"train_probs": np.full((5, 3), 1 / 3, np.float32), "test_probs": np.full((2, 3), 1 / 3, np.float32),
              "train_noisy": np.arange(5) % 3}
    monkeypatch.setattr(RunDir, "MEMMAP_ABOVE_BYTES", 0)
    run.write_predictions(arrays)
    assert not run.predictions_path.exists() and (run.path / RunDir.PREDICTIONS_DIR / "train_probs.npy").is_file()
    back = run.read_predictions()
    assert isinstance(back["train_probs"], np.memmap) and np.array_equal(back["train_noisy"], arrays["train_noisy"])
    monkeypatch.setattr(RunDir, "MEMMAP_ABOVE_BYTES", 1 << 30)
    run.write_predictions(arrays)  # small again: one .npz, the folder removed
    assert run.predictions_path.is_file() and not (run.path / RunDir.PREDICTIONS_DIR).exists()
    assert not isinstance(run.read_predictions()["train_probs"], np.memmap)
