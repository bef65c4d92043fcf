"""benchmarks/regimes.py: the JSON it writes (shape, per-seed values, agreement with ``dsink run``'s results.json)
and the issue-32 criterion it reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import regimes  # noqa: E402

ROWS = {"ce", "rolt", "f_L (la)", "f_N (gce)", "average (f_L + f_N)", "kd", "D-SINK"}


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "regimes.py"), "--smoke", "--work",
                           str(tmp_path / "work"), "--out", str(tmp_path / "out.json"), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def _row(method, role, top1, sel):
    return {"method": method, "role": role, "top1": top1, "top1_best_val": sel}


def _rows(d_last, d_sel, best=0.80, aux=0.78):
    return [_row("ce", "baseline", 0.70, 0.70), _row("f_L (la)", "imbalance", aux, aux),
            _row("f_N (gce)", "noise", aux - 0.01, aux - 0.01), _row("kd", "combined", best, best),
            _row("D-SINK", "target", d_last, d_sel)]


@pytest.mark.parametrize("d_last, d_sel, aux, met, near_best, above_aux", [
    (0.796, 0.796, 0.78, True, True, True),    # 0.4 below the best other: within the half point
    (0.794, 0.800, 0.78, False, False, True),  # 0.6 below at the last epoch
    (0.800, 0.794, 0.78, False, False, True),  # 0.6 below at the selected checkpoint only
    (0.800, 0.800, 0.812, False, False, False),  # the best other is f_L now, and D-SINK 1.2 below it
    (0.790, 0.790, 0.785, False, False, True),  # 1 point below kd, only 0.5 below the better auxiliary
])
def test_summary_criterion(d_last, d_sel, aux, met, near_best, above_aux):
    s = regimes.summary(_rows(d_last, d_sel, aux=aux))
    assert s["within_half_point_of_best"] is near_best
    assert s["at_most_one_point_below_aux"] is above_aux
    assert s["criterion_met"] is met
    assert s["dsink_minus_best_other"]["top1"] == pytest.approx(100 * (d_last - max(0.80, aux)))
    assert s["better_aux"]["top1"] == "f_L (la)"


def test_smoke_mlp_json(tmp_path):
    res = _run(tmp_path, "--regimes", "mlp", "--seeds", "0", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "out.json").read_text())
    assert {"regimes", "machine", "command", "variant", "seeds"} <= set(report)
    assert report["variant"]["name"] == "default" and report["seeds"] == [0, 1]
    entry = report["regimes"]["mlp"]
    assert {"rows", "setting", "seconds", "summary"} <= set(entry)
    assert entry["setting"]["params"]["rolt"]["warmup_epochs"] >= 1
    rows = {r["method"]: r for r in entry["rows"]}
    assert set(rows) == ROWS
    # the rows are dsink run's rows: the same means as the pipeline's own results.json
    (pipe,) = entry["pipelines"]
    ref = {r["method"]: r for r in json.loads((Path(pipe) / "results.json").read_text())["rows"]}
    for name, row in rows.items():
        assert row["seeds"] == [0, 1]
        for key in ("top1", "top1_best_val"):
            assert row[key] == pytest.approx(ref[name][key])
            assert len(row["per_seed"][key]) == 2
            assert sum(row["per_seed"][key]) / 2 == pytest.approx(row[key])
    # seeds are data seeds too: the two seeds' f_N runs saw different data
    assert len(set(rows["f_N (gce)"]["runs"])) == 2
    s = entry["summary"]
    others = [r for r in entry["rows"] if r["role"] != "target"]
    for key in ("top1", "top1_best_val"):
        best = max(r[key] for r in others)
        assert s["dsink_minus_best_other"][key] == pytest.approx(100 * (rows["D-SINK"][key] - best))
    assert s["criterion_met"] == (s["within_half_point_of_best"] and s["at_most_one_point_below_aux"])
    assert "| mlp |" in res.stdout  # the per-regime line of the printed table


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA device is present")
def test_gpu_regime_refuses_without_cuda(tmp_path):
    res = _run(tmp_path, "--regimes", "gpu")
    assert res.returncode != 0
    assert "needs a CUDA device" in res.stderr
    assert not (tmp_path / "out.json").exists()


@pytest.mark.slow
def test_smoke_photo_folder_regimes(tmp_path):
    """The features and finetune routes: a folder per seed, merged into one row per method."""
    res = _run(tmp_path, "--regimes", "features", "finetune", "--seeds", "0", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "out.json").read_text())
    for name in ("features", "finetune"):
        entry = report["regimes"][name]
        assert len(entry["pipelines"]) == 2
        assert {r["method"] for r in entry["rows"]} == ROWS
        assert all(r["seeds"] == [0, 1] for r in entry["rows"])
        assert set(entry["setting"]["folder"]["per_seed"]) == {"0", "1"}
