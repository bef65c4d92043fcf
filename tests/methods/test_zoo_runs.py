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
        assert main(["train", "--method", method, *_sets(), "--out", str(out), "-q"]) == 0
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
