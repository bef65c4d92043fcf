"""The tiny-data regime of benchmarks/regimes.py (a small CNN from scratch on about 500 long-tailed noisy
Fashion-MNIST images, 3 epochs): GCE collapses onto the head classes there, and with the defaults D-SINK must notice
it, follow f_L from its weights and never collapse to one class (issue 32)."""

import json
import sys
from pathlib import Path

import numpy as np

from dsink.config import load_config
from dsink.train import distill_config, train_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from regimes import TINY  # noqa: E402  (the regime's own recipe: the test follows it)


def test_tiny_data_defaults_follow_f_l_and_never_collapse(tmp_path):
    over = TINY + [f"data.cache_dir={tmp_path / 'cache'}"]
    runs, top1 = {}, {}
    for m in ("la", "gce"):
        runs[m] = tmp_path / m
        top1[m] = train_run(load_config(None, over + [f"method.name={m}"]), runs[m])["last"]["top1"]
    report = train_run(distill_config(runs["la"], runs["gce"], None, []), tmp_path / "dsink")
    first = json.loads((tmp_path / "dsink" / "metrics.jsonl").read_text().splitlines()[0])
    with np.load(runs["gce"] / "predictions.npz") as z:
        gce_train = np.bincount(z["train_probs"].argmax(1), minlength=10)
    with np.load(tmp_path / "dsink" / "predictions.npz") as z:
        test_pred = z["test_probs"].argmax(1)
    assert (gce_train == 0).sum() >= 3  # the collapse the defaults look for
    assert first["unfit_auxiliary"] == 2  # f_N replaced by f_L; f started from f_L's weights
    assert len(set(test_pred.tolist())) >= 5  # never one class
    assert report["last"]["top1"] > top1["gce"] + 0.05
