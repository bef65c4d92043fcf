"""TABASCO: weighted JS divergence, adaptive centroid distance, the per-class metric choice, a CLI run and resume."""

import json
import math

import numpy as np
import pytest
import torch

from dsink.cli import main
from dsink.config import MethodConfig, load_config
from dsink.errors import InputError
from dsink.methods import MethodContext, build_method
from dsink.methods.tabasco import (
    centroid_distance,
    class_mean_probs,
    divide,
    js_to_label,
    weighted_js,
)
from dsink.train import train_run


def _js(p, y):
    """JS(p, e_y) written out term by term (nats)."""
    m = [(pj + (j == y)) / 2 for j, pj in enumerate(p)]
    kl_p = sum(pj * math.log(pj / m[j]) for j, pj in enumerate(p) if pj > 0)
    return (kl_p + math.log(1 / m[y])) / 2


def test_weighted_js_on_hand_made_probabilities():
    probs = torch.tensor([[0.6, 0.3, 0.1],  # label 1: disagrees (ratio 2), capped by its class's 1.25
                          [0.4, 0.5, 0.1],  # label 1: agrees (ratio 0.8 -> weight 1)
                          [0.7, 0.2, 0.1]], dtype=torch.float64)  # label 0: its class agrees (cap 1)
    labels = torch.tensor([1, 1, 0])
    mean = class_mean_probs(probs, labels, 3)
    assert torch.allclose(mean[1], torch.tensor([0.5, 0.4, 0.1], dtype=torch.float64))
    want = [1.25 * _js([0.6, 0.3, 0.1], 1), _js([0.4, 0.5, 0.1], 1), _js([0.7, 0.2, 0.1], 0)]
    assert weighted_js(probs, labels, mean).tolist() == pytest.approx(want, rel=1e-12)
    assert want[0] == pytest.approx(1.25 * 0.34201, abs=1e-5)  # 0.5 (0.7 ln2 + 0.3 ln(0.3/0.65)) + 0.5 ln(1/0.65)
    # bounds: 0 for a one-hot prediction of the label, log 2 for one of another class
    js = js_to_label(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    assert js.tolist() == pytest.approx([0.0, math.log(2)], abs=1e-7)


def _auc(score, positive):
    """Probability that a positive scores above a negative (ties count half)."""
    pos, neg = score[positive], score[~positive]
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())


def _two_fooling_classes(n_clean=80, n_noisy=20, dim=8, seed=0):
    """Class 0 (A): noisy samples predicted confidently as their wrong label (JS blind) but with features of
    class 2; class 1 (B): noisy samples predicted as class 2 (JS sees them) with class-1 features (ACD blind)."""
    g = torch.Generator().manual_seed(seed)
    n = n_clean + n_noisy
    basis = torch.eye(dim, dtype=torch.float64)[:3] * 3

    def feats(direction, k):
        return basis[direction] + 0.3 * torch.randn(k, dim, generator=g, dtype=torch.float64)

    def probs(top, lo, hi, k):
        q = lo + (hi - lo) * torch.rand(k, generator=g, dtype=torch.float64)
        p = ((1 - q) / 2)[:, None].repeat(1, 3)
        p[torch.arange(k), top] = q
        return p

    f = torch.cat([feats(0, n_clean), feats(2, n_noisy), feats(1, n)])
    p = torch.cat([probs(0, 0.85, 0.97, n), probs(1, 0.80, 0.95, n_clean), probs(2, 0.80, 0.95, n_noisy)])
    labels = torch.tensor([0] * n + [1] * n)
    clean = torch.tensor(([True] * n_clean + [False] * n_noisy) * 2)
    return p, f, labels, clean


def test_the_rule_picks_the_metric_that_separates_each_class():
    p, f, labels, truly_clean = _two_fooling_classes()
    div = divide(p, f, labels, 3)
    assert div.uses_acd.tolist() == [True, False, False]  # A: centroid distance, B: WJSD, class 2: empty
    assert div.separation[0, 1] > 2 * div.separation[0, 0] and div.separation[1, 0] > 2 * div.separation[1, 1]
    wjsd = weighted_js(p, labels, class_mean_probs(p, labels, 3))
    acd = centroid_distance(f, p, labels, 3)
    for c in (0, 1):
        rows = labels == c
        clean, truth = div.clean[rows], truly_clean[rows]
        assert _auc(clean, truth) > 0.95
        assert float((clean[truth] > 0.5).float().mean()) > 0.9  # clean recall
        assert float((clean[~truth] <= 0.5).float().mean()) > 0.9  # noisy recall
    # each class fools the other metric: alone it would not separate (low score = clean)
    assert _auc(-wjsd[labels == 0], truly_clean[labels == 0]) < 0.75
    assert _auc(-acd[labels == 1], truly_clean[labels == 1]) < 0.75


def _ctx():
    return MethodContext(num_classes=4, class_counts=np.array([40, 20, 10, 5]), num_train=75, epochs=10,
                         device=torch.device("cpu"), noise_rate=0.3, seed=0)


def test_bad_params_and_no_selection_during_warmup():
    with pytest.raises(InputError, match="tabasco needs"):
        build_method(MethodConfig(name="tabasco", params={"alpha": 0.0}), _ctx())
    m = build_method(MethodConfig(name="tabasco", params={}), _ctx())
    assert (m.p.warmup_epochs, m.p.alpha, m.p.lambda_u, m.p.temperature, m.p.p_threshold, m.p.rampup_epochs,
            m.p.warmup_penalty) == (10, 4.0, 25.0, 0.5, 0.5, 16, False)  # the published recipe
    assert m.sample_selection() is None


SMALL = ["data.n_max=150", "data.imbalance_ratio=10", "data.noise_rate=0.3", "optim.batch_size=64",
         "optim.epochs=2", "method.params.warmup_epochs=1", "model.name=mlp"]


def test_cli_run_logs_the_selection_and_resumes_bit_identically(tmp_path):
    sets = [a for o in SMALL for a in ("--set", o)]
    full = tmp_path / "t"
    assert main(["train", "--method", "tabasco", *sets, "--out", str(full), "-q"]) == 0
    assert json.loads((full / "eval.json").read_text())["method"] == "tabasco"
    rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert "labelled_net" not in rows[0] and 0 < rows[1]["labelled_net"] < 1 and 0 <= rows[1]["acd_classes_peer"] <= 1
    with np.load(full / "selection.npz") as z:
        clean, label = z["clean"], z["label"]
    assert clean.dtype == np.float32 and label.dtype == np.int64 and len(clean) == len(label)
    assert ((label == -1) == (clean <= 0.5)).all() and 0 < (label >= 0).mean() < 1
    # stop after the warm-up epoch, resume: the same weights and the same selection
    part = tmp_path / "part"
    assert train_run(load_config(None, SMALL + ["method.name=tabasco"]), part, stop_after=1) is None
    assert not (part / "selection.npz").exists()
    assert main(["train", "--method", "tabasco", *sets, "--out", str(part), "--resume", "-q"]) == 0
    a, b = (torch.load(d / "checkpoints" / "last.pt", weights_only=False) for d in (full, part))
    for k in ("net", "peer"):
        assert all(torch.equal(a["models"][k][w], b["models"][k][w]) for w in a["models"][k])
    with np.load(part / "selection.npz") as z:
        assert np.array_equal(z["clean"], clean) and np.array_equal(z["label"], label)
