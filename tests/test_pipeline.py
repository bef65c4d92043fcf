"""dsink run: the pipeline trains each model once, reuses cached runs and writes the results table."""

import csv
import json
import re

import pytest

from dsink.cli import main
from dsink.errors import InputError
from dsink.pipeline import load_pipeline

SMALL = ["data.n_max=100", "data.imbalance_ratio=10", "data.noise_rate=0.3", "optim.batch_size=64", "model.width=8",
         "train.track_correction=true"]


def _sets(extra=()):
    return [a for o in SMALL + list(extra) for a in ("--set", o)]


def test_run_writes_table_and_reuses_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["run", *_sets(["pipeline.combined=[average,kd]", "pipeline.target.alpha=0.5"]), "--epochs", "1", "--seeds", "0", "1",
            "--out", "res", "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[12/12]" in out and re.search(r"\| D-SINK( \(deploy\))? \| target \|", out)
    res = json.loads((tmp_path / "res" / "results.json").read_text())
    methods = [r["method"] for r in res["rows"]]
    assert methods == ["ce", "f_L (la)", "f_N (gce)", "average (f_L + f_N)", "kd", "D-SINK"]
    for r in res["rows"]:
        assert r["seeds"] == [0, 1] and len(set(r["runs"])) == 2
        assert 0 <= r["top1"] <= 1 and r["top1_std"] >= 0 and r["correction_rate"] is not None
        # the row's mean is the mean of the runs' own eval.json
        tops = [json.loads((tmp_path / d / "eval.json").read_text())["last"]["top1"] for d in r["runs"]]
        assert r["top1"] == pytest.approx(sum(tops) / 2)
        best = [json.loads((tmp_path / d / "eval.json").read_text())["best"]["top1"] for d in r["runs"]]
        assert r["top1_best_val"] == pytest.approx(sum(best) / 2)  # the best-noisy-validation checkpoints
    with open(tmp_path / "res" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == methods and float(rows[0]["top1"]) == pytest.approx(res["rows"][0]["top1"])
    assert "| method | role | top-1 |" in (tmp_path / "res" / "results.md").read_text()
    # the row to deploy: the target when the health check found its auxiliaries fit, else a fit auxiliary
    dep = res["deploy"]
    flagged = {w["role"] for w in res["health"]["warnings"]}
    expect = "D-SINK" if not flagged else next((m for m, role in (("f_L (la)", "imbalance"), ("f_N (gce)", "noise"))
                                                 if role not in flagged), "ce")
    assert dep["method"] == expect
    assert [r["method"] for r in res["rows"] if r["deploy"]] == [dep["method"]]
    assert f"| {dep['method']} (deploy) |" in (tmp_path / "res" / "results.md").read_text()
    assert set(res["health"]) == {"ok", "warnings", "scores"} and res["health"]["ok"] == (not res["health"]["warnings"])
    # D-SINK was distilled from this seed's f_L and f_N
    d0 = res["rows"][-1]["runs"][0]
    params = json.loads(json.dumps(__import__("yaml").safe_load((tmp_path / d0 / "config.yaml").read_text())))["method"]["params"]
    assert params["imbalance_run"] == res["rows"][1]["runs"][0] and params["noise_run"] == res["rows"][2]["runs"][0]
    # kd distils the same seed's auxiliaries with the target's shared settings (alpha), and nothing of the transport
    k0 = __import__("yaml").safe_load((tmp_path / res["rows"][4]["runs"][0] / "config.yaml").read_text())["method"]
    assert k0["name"] == "kd" and k0["params"]["alpha"] == params["alpha"] == 0.5 and "eps" not in k0["params"]
    assert (k0["params"]["imbalance_run"], k0["params"]["noise_run"]) == (params["imbalance_run"], params["noise_run"])
    # a second call trains nothing: every checkpoint stays as it was
    ckpts = sorted((tmp_path / "runs" / "cache").glob("*/checkpoints/last.pt"))
    before = {p: p.stat().st_mtime_ns for p in ckpts}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in ckpts} == before
    capsys.readouterr()
    _check_audit(tmp_path / d0, capsys)
    _check_plots(tmp_path / "res", capsys)


def _check_plots(res, capsys):
    assert main(["plot", str(res)]) == 0  # the t-SNE only when asked for
    assert sorted(p.split("/")[-1] for p in capsys.readouterr().out.split()) == ["correction.png", "per_class.png"]
    assert main(["plot", str(res), "--embedding"]) == 0
    paths = capsys.readouterr().out.split()
    assert sorted(p.split("/")[-1] for p in paths) == ["correction.png", "embedding.png", "per_class.png"]
    for p in paths:
        head = open(p, "rb").read(8)
        assert head == b"\x89PNG\r\n\x1a\n"


def _check_audit(run, capsys):
    """dsink audit: flags = rows whose surrogate argmax differs from the given label, ranked by margin,
    scored against the known noise."""
    import numpy as np
    import yaml

    from dsink import surrogate_labels

    assert main(["audit", str(run), "--json", "--top", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with np.load(run / "predictions.npz") as z:
        given, true, f = z["train_noisy"], z["train_true"], z["train_probs"]
    p = yaml.safe_load((run / "config.yaml").read_text())["method"]["params"]
    with np.load(f"{p['noise_run']}/predictions.npz") as a, np.load(f"{p['imbalance_run']}/predictions.npz") as b:
        q = np.asarray(surrogate_labels(a["train_probs"], b["train_probs"], f, class_totals=p["class_totals"]))
    flagged = q.argmax(1) != given
    with open(run / "audit.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert summary["source"] == "surrogate labels" and summary["flagged"] == len(rows) == int(flagged.sum())
    assert sorted(int(r["train_position"]) for r in rows) == sorted(np.flatnonzero(flagged).tolist())
    margins = [float(r["margin"]) for r in rows]
    assert margins == sorted(margins, reverse=True) and all(m > 0 for m in margins)
    noisy = given != true
    want_p = (flagged & noisy).sum() / flagged.sum()
    assert summary["overall"]["precision"] == pytest.approx(want_p)
    assert summary["overall"]["recall"] == pytest.approx((flagged & noisy).sum() / noisy.sum())
    assert all(int(r["truly_mislabelled"]) == int(r["true_label"] != r["given_label"]) for r in rows)


def test_pipeline_config_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: {name: ce}\n")
    assert main(["run", str(bad)]) == 2
    assert "pipeline:" in capsys.readouterr().err
    with pytest.raises(InputError, match="valid: baseline, imbalance"):
        load_pipeline(None, ["pipeline.overrides.fancy.optim.lr=1"])
    with pytest.raises(InputError, match="unknown config key"):
        load_pipeline(None, ["pipeline.colour=red"])
    assert main(["run", "--set", "pipeline.combined=[nope]", "--out", str(tmp_path / "r")]) == 2
    assert "use average or one of" in capsys.readouterr().err
    assert main(["run", "--set", "pipeline.noise.name=nope", "--out", str(tmp_path / "r")]) == 2
    assert "unknown method 'nope'; valid methods: bs" in capsys.readouterr().err


def test_duplicate_seeds_are_refused_naming_them(tmp_path, capsys):
    with pytest.raises(InputError, match=r"pipeline.seeds repeats 0 \(\[0, 0\]\).*distinct seeds, e.g. \[0\]"):
        load_pipeline(None, ["pipeline.seeds=[0, 0]"])
    for args in (["--set", "pipeline.seeds=[1,2,1,2,3]"], ["--seeds", "1", "2", "1", "2", "3"]):
        assert main(["run", *args, "--out", str(tmp_path / "r"), "-q"]) == 2
        err = capsys.readouterr().err
        assert "repeats 1, 2" in err and "e.g. [1, 2, 3]" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_vary_data_seed_makes_each_seed_the_data_seed():
    from dsink.config import MethodConfig
    from dsink.pipeline import load_pipeline, role_config

    base, pipe = load_pipeline(None, ["pipeline.seeds=[3,4]", "data.data_seed=7"])
    assert role_config(base, pipe, "noise", MethodConfig(name="gce"), 4).data.data_seed == 7  # fixed by default
    base, pipe = load_pipeline(None, ["pipeline.seeds=[3,4]", "pipeline.vary_data_seed=true"])
    cfgs = [role_config(base, pipe, "noise", MethodConfig(name="gce"), s) for s in pipe.seeds]
    assert [(c.train.seed, c.data.data_seed) for c in cfgs] == [(3, 3), (4, 4)]


def test_pipeline_params_reach_the_named_baselines_and_combined_methods(tmp_path):
    from dsink.pipeline import plan_jobs

    base, pipe = load_pipeline(None, ["pipeline.baselines=[ce,dividemix]", "pipeline.combined=[average,kd]",
                                      "pipeline.params={dividemix: {warmup_epochs: 3}, kd: {weight: 0.3}}",
                                      "pipeline.seeds=[0,1]"])
    jobs = plan_jobs(base, pipe, tmp_path)
    by = {(j.label, j.seed): j for j in jobs}
    assert by[("dividemix", 1)].cfg.method.params["warmup_epochs"] == 3
    assert by[("dividemix", 1)].cfg.method.params["p_threshold"] == 0.5  # the others keep their defaults
    assert by[("ce", 0)].cfg.method.params == {}
    kd = by[("kd", 0)].cfg.method.params
    assert kd["weight"] == 0.3 and kd["imbalance_run"] == str(by[("f_L (la)", 0)].run_dir)
    # a different warm-up is a different cached run
    _, other = load_pipeline(None, ["pipeline.baselines=[ce,dividemix]", "pipeline.params={dividemix: {warmup_epochs: 4}}"])
    assert plan_jobs(base, other, tmp_path)[1].run_dir != by[("dividemix", 0)].run_dir
    with pytest.raises(InputError, match="pipeline.params names rolt, which is not in pipeline.baselines"):
        load_pipeline(None, ["pipeline.params={rolt: {warmup_epochs: 3}}"])
    with pytest.raises(InputError, match="pipeline.params.ce must be a mapping"):
        load_pipeline(None, ["pipeline.params={ce: 3}"])
    _, bad = load_pipeline(None, ["pipeline.baselines=[dividemix]", "pipeline.params={dividemix: {warmup: 3}}"])
    with pytest.raises(InputError, match="warmup"):
        plan_jobs(base, bad, tmp_path)


def test_paper_row_is_the_preset_beside_the_default(tmp_path):
    """pipeline.paper (dsink run --paper): a "D-SINK (paper)" row trained with method.params.preset=paper on the
    same auxiliaries, every knob resolved to the paper's reading, beside dsink's default D-SINK row."""
    from dsink.methods.dsink import PRESETS
    from dsink.pipeline import plan_jobs

    base, pipe = load_pipeline(None, ["pipeline.paper=true", "pipeline.target.alpha=0.5"])
    jobs = {j.label: j for j in plan_jobs(base, pipe, tmp_path)}
    paper, default = jobs["D-SINK (paper)"], jobs["D-SINK"]
    assert paper.role == "paper" and default.role == "target"
    pp, dp = paper.cfg.method.params, default.cfg.method.params
    assert pp["preset"] == "paper" and {k: pp[k] for k in PRESETS["paper"]} == PRESETS["paper"]
    assert dp["preset"] == "dsink" and dp["alpha"] == 0.5 and dp["cost"] == "average+target"
    assert pp["imbalance_run"] == dp["imbalance_run"] and pp["noise_run"] == dp["noise_run"]
    _, off = load_pipeline(None, [])
    assert "D-SINK (paper)" not in {j.label for j in plan_jobs(base, off, tmp_path)}
