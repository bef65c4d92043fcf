"""One short run per role on a small long-tailed noisy Fashion-MNIST subset, then D-SINK from them."""

import json

import numpy as np

from dsink.cli import main

SMALL = ["data.n_max=150", "data.imbalance_ratio=10", "data.noise_rate=0.3", "optim.batch_size=64",
         "optim.lr=0.05", "optim.epochs=2"]


def _sets(extra=()):
    return [a for o in SMALL + list(extra) for a in ("--set", o)]


def test_each_role_runs_and_feeds_dsink(tmp_path, capsys):
    # imbalance role (with its own head), and a two-network combined method as f_N
    for method in ("ldam_drw", "coteaching_la"):
        out = tmp_path / method
        assert main(["train", "--method", method, *_sets(["model.width=16"]), "--out", str(out), "-q"]) == 0
        rep = json.loads((out / "eval.json").read_text())
        assert rep["method"] == method and 0.1 < rep["last"]["top1"] <= 1
        with np.load(out / "predictions.npz") as z:
            assert np.allclose(z["train_probs"].sum(1), 1, atol=1e-4)
    assert main(["eval", str(tmp_path / "coteaching_la"), "-q"]) == 0
    d = tmp_path / "dsink"
    assert main(["distill", "--imbalance-run", str(tmp_path / "ldam_drw"), "--noise-run", str(tmp_path / "coteaching_la"),
                 "--set", "method.params.init=noise", "--out", str(d), "-q"]) == 0
    assert json.loads((d / "eval.json").read_text())["last"]["top1"] > 0.1
    capsys.readouterr()


def test_dividemix_resampling_and_the_average_baseline(tmp_path, capsys):
    runs = {"cb_drs": ["method.params.drw_start=0.5", "model.name=mlp"],
            "dividemix": ["method.params.warmup_epochs=1", "model.name=mlp"]}
    for method, extra in runs.items():
        out = tmp_path / method
        assert main(["train", "--method", method, *_sets(extra), "--out", str(out), "-q"]) == 0
        rep = json.loads((out / "eval.json").read_text())
        assert rep["method"] == method and 0.1 < rep["last"]["top1"] <= 1
    rows = [json.loads(line) for line in (tmp_path / "dividemix" / "metrics.jsonl").read_text().splitlines()]
    assert "labelled_net" not in rows[0] and 0 < rows[1]["labelled_net"] < 1  # co-divide after the warm-up
    # its per-sample division is saved with the run, and the audit adds it as columns and scores it
    with np.load(tmp_path / "dividemix" / "selection.npz") as z, \
            np.load(tmp_path / "dividemix" / "predictions.npz") as pr:
        clean, label, given = z["clean"], z["label"], pr["train_noisy"]
        assert clean.shape == given.shape and ((clean >= 0) & (clean <= 1)).all()
        assert ((label == given) == (clean > 0.5)).all() and set(np.unique(label[clean <= 0.5])) <= {-1}
    assert main(["audit", str(tmp_path / "dividemix"), "--json"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["method_judged_noisy"] == int((clean < 0.5).sum())
    assert set(summary["method_selection"]) == {"overall", "tail"} and "method's own selection" in out
    with open(tmp_path / "dividemix" / "audit.csv") as f:
        header = f.readline().strip().split(",")
    assert header[-2:] == ["method_clean", "method_label"]
    avg = tmp_path / "avg"
    assert main(["average", "--imbalance-run", str(tmp_path / "cb_drs"), "--noise-run", str(tmp_path / "dividemix"),
                 "--out", str(avg)]) == 0
    rep = json.loads((avg / "eval.json").read_text())
    with np.load(tmp_path / "cb_drs" / "predictions.npz") as a, np.load(tmp_path / "dividemix" / "predictions.npz") as b, \
            np.load(avg / "predictions.npz") as c:
        assert np.allclose(c["test_probs"], (a["test_probs"] + b["test_probs"]) / 2, atol=1e-6)
        want = float((c["test_probs"].argmax(1) == c["test_labels"]).mean())
    assert rep["method"] == "average" and rep["last"]["top1"] == want
    # the average is a run directory for eval (recomputed from its sources) and an auxiliary for distill
    assert main(["eval", str(avg), "-q"]) == 0
    assert json.loads((avg / "eval.json").read_text())["last"] == rep["last"]
    assert main(["average", "--imbalance-run", str(tmp_path / "cb_drs"), "--noise-run", str(tmp_path / "dividemix"),
                 "--out", str(avg)]) == 2  # exists: needs --force
    assert "--force" in capsys.readouterr().err
    d = tmp_path / "dsink"
    assert main(["distill", "--imbalance-run", str(avg), "--noise-run", str(tmp_path / "dividemix"),
                 "--set", "optim.epochs=1", "--out", str(d), "-q"]) == 0
    assert json.loads((d / "eval.json").read_text())["method"] == "dsink"
    capsys.readouterr()
