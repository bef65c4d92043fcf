"""SFA's pieces (centroid moments, dynamic threshold, stochastic distance selection, heads) and a short run."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dsink.cli import main
from dsink.config import MethodConfig, load_config
from dsink.errors import InputError
from dsink.losses import log_prior
from dsink.methods import MethodContext, build_method
from dsink.methods.sfa import (StochasticCentroids, dynamic_threshold, instant_centroids,
                               sfa_select)
from dsink.models import build_model
from dsink.models.heads import centred_l2, classifier_head
from dsink.runs import load_checkpoint
from dsink.train import train_run


def _ctx(counts=(40, 20, 10, 5), seed=0):
    return MethodContext(num_classes=len(counts), class_counts=np.array(counts), num_train=int(sum(counts)),
                         epochs=10, device=torch.device("cpu"), noise_rate=0.3, seed=seed)


def _blobs(counts, *, dim=32, radius=6.0, std=0.5, noise_rate=0.3, seed=0):
    """Long-tailed Gaussian blobs: features (N, D), true labels, labels with ``noise_rate`` flipped uniformly to
    another class, and the class centres (C, D)."""
    g = torch.Generator().manual_seed(seed)
    c = len(counts)
    centres = radius * torch.eye(c, dim)
    true = torch.repeat_interleave(torch.arange(c), torch.tensor(counts))
    feats = centres[true] + std * torch.randn(len(true), dim, generator=g)
    flip = torch.rand(len(true), generator=g) < noise_rate
    other = (true + torch.randint(1, c, (len(true),), generator=g)) % c
    return feats, true, torch.where(flip, other, true), centres


def _abc_confidence(feats, labels, centres):
    """A balanced classifier that learnt the clean classes: softmax of negative squared distances to the centres."""
    logits = -torch.cdist(feats, centres) ** 2 / feats.shape[1]
    return logits.softmax(1).gather(1, labels[:, None]).squeeze(1)


# ---------------------------------------------------------------------------- (1) centroid moments
def test_cl2n_and_instant_centroids_by_hand():
    feats = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 3.0], [1.0, -3.0]])
    z = centred_l2(feats)  # mean (1, 0); centred rows (1,0), (-1,0), (0,3), (0,-3); unit length
    assert torch.allclose(z, torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
    labels = torch.tensor([0, 0, 1, 1])
    cents, kept = instant_centroids(z, labels, torch.tensor([True, False, True, True]), 3)
    assert torch.allclose(cents, torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))  # class 0: its kept row only
    assert kept.tolist() == [1, 2, 0]
    cents, kept = instant_centroids(z, labels, torch.tensor([False, False, True, False]), 2)
    assert torch.allclose(cents, torch.tensor([[0.0, 0.0], [0.0, 1.0]]))  # class 0 has none kept: all its rows
    assert kept.tolist() == [0, 1]


def test_ema_moments_equal_the_hand_computed_values():
    c = StochasticCentroids(beta=0.99)
    c.update(torch.tensor([[1.0, 2.0], [0.0, -1.0]]))
    assert torch.equal(c.mean, torch.tensor([[1.0, 2.0], [0.0, -1.0]])) and torch.equal(c.var, torch.zeros(2, 2))
    c.update(torch.tensor([[3.0, 2.0], [0.0, 1.0]]))
    # m = .99 m + .01 c; s = .99 s + .01 c^2; var = s - m^2 = .99 * .01 * (c - m_old)^2
    assert torch.allclose(c.mean, torch.tensor([[1.02, 2.0], [0.0, -0.98]]))
    assert torch.allclose(c.sq, torch.tensor([[1.08, 4.0], [0.0, 1.0]]))
    assert torch.allclose(c.var, torch.tensor([[0.0396, 0.0], [0.0, 0.0396]]), atol=1e-6)


def test_selection_updates_the_moments_from_the_confident_cl2n_centroids():
    labels = torch.tensor([0, 0, 1, 1])
    conf = torch.tensor([0.9, 0.05, 0.9, 0.9])  # row 1 is below the threshold: not in class 0's centroid
    c, g = StochasticCentroids(beta=0.9), torch.Generator().manual_seed(0)
    sfa_select(torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 3.0], [1.0, -3.0]]), labels, conf, c,
               threshold=0.1, num_classes=2, gen=g)
    assert torch.allclose(c.mean, torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    # second epoch: features (1,0),(0,0),(0,2),(0,-2) -> mean (.25,0); cl2n (1,0),(-1,0),(-.124,.992),(-.124,-.992)
    sfa_select(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0], [0.0, -2.0]]), labels, conf, c,
               threshold=0.1, num_classes=2, gen=g)
    u = -0.25 / math.hypot(0.25, 2.0)
    assert torch.allclose(c.mean, torch.tensor([[1.0, 0.0], [0.1 * u, 0.0]]), atol=1e-6)
    assert torch.allclose(c.var, torch.tensor([[0.0, 0.0], [0.9 * 0.1 * u * u, 0.0]]), atol=1e-6)


def test_centroid_draws_follow_the_gaussian_only_for_well_populated_classes():
    c = StochasticCentroids(beta=0.5)
    c.mean, c.sq = torch.zeros(2, 4000), torch.full((2, 4000), 4.0)  # variance 4
    d = c.draw(torch.tensor([True, False]), torch.Generator().manual_seed(3))
    assert float(d[0].std()) == pytest.approx(2.0, rel=0.05) and abs(float(d[0].mean())) < 0.1
    assert torch.equal(d[1], torch.zeros(4000))  # too few confident samples: the mean
    assert torch.equal(d, c.draw(torch.tensor([True, False]), torch.Generator().manual_seed(3)))


# ---------------------------------------------------------------------------- (2) dynamic threshold
def test_dynamic_threshold_rises_as_phi_to_the_epoch_and_drops_memorised_samples():
    taus = [dynamic_threshold(e, 1.005, 4) for e in range(200)]
    assert taus[0] == pytest.approx(1.005 / 4) and taus[99] == pytest.approx(1.005 ** 100 / 4)
    assert all(b > a for a, b in zip(taus, taus[1:]))  # it only rises
    # class 0: three clean samples at (1, 0), two noisy ones at (-1, 0) whose ABC confidence 0.26 is just above
    # uniform (1/C = 0.25) because the network memorises them; class 1 sits at (0, +-1)
    feats = torch.tensor([[1.0, 0.0]] * 3 + [[-1.0, 0.0]] * 2 + [[0.0, 1.0], [0.0, -1.0]]) * 5 + 2
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    conf = torch.tensor([0.9, 0.9, 0.9, 0.26, 0.26, 0.9, 0.9])
    z = centred_l2(feats)

    def class0_centroid(tau):
        return instant_centroids(z, labels, conf > tau, 4)[0][0]

    assert dynamic_threshold(0, 1.005, 4) < 0.26 < dynamic_threshold(10, 1.005, 4)
    fixed = class0_centroid(1 / 4)  # a fixed 1/C threshold keeps the memorised samples: centroid pulled over
    assert torch.allclose(class0_centroid(dynamic_threshold(0, 1.005, 4)), fixed)  # early on: the same
    clean = z[:3].mean(0)
    assert torch.allclose(class0_centroid(dynamic_threshold(10, 1.005, 4)), clean)  # later: clean samples only
    assert float((fixed - clean).norm()) > 0.5


def test_selection_follows_drifting_features_where_a_fixed_cut_fails():
    feats, true, given, centres = _blobs((200, 100, 50), dim=8, noise_rate=0.3, seed=1)
    noisy = given != true
    c, g = StochasticCentroids(beta=0.99), torch.Generator().manual_seed(0)
    conf = _abc_confidence(feats, given, centres)
    # raw-space rule fixed at epoch 0: distance to class 0's raw centroid, cut half-way between clean and noisy
    rows = given == 0
    raw_centre = feats[rows & ~noisy].mean(0)
    d0 = (feats[rows] - raw_centre).norm(dim=1)
    cut = float((d0[~noisy[rows]].max() + d0[noisy[rows]].min()) / 2)
    drift = torch.randn(8, generator=torch.Generator().manual_seed(2))
    kept_radius = []
    for epoch in range(6):  # the feature cloud grows and moves, as penultimate features do during training
        x = (1 + epoch) * feats + 3 * epoch * drift
        prob, _ = sfa_select(x, given, conf, c, threshold=dynamic_threshold(30 + epoch, 1.005, 3), num_classes=3,
                             gen=g, min_sampled=0)
        assert torch.equal(prob > 0.5, ~noisy), epoch  # every epoch: exactly the clean samples
        kept_radius.append(float((x[rows & (prob > 0.5)] - x[rows & (prob > 0.5)].mean(0)).norm(dim=1).max()))
    fixed = (x[rows] - raw_centre).norm(dim=1) <= cut
    assert float((fixed != ~noisy[rows]).float().mean()) > 0.5  # the fixed rule calls most of the class noisy
    assert kept_radius[-1] == pytest.approx(6 * kept_radius[0], rel=1e-3)  # SFA's cut scales with the features


# ---------------------------------------------------------------------------- (3) selection on long-tailed blobs
def test_selection_separates_clean_from_noisy_on_long_tailed_blobs():
    counts = (500, 250, 120, 60, 30)
    c, g = StochasticCentroids(beta=0.99), torch.Generator().manual_seed(0)
    for epoch in range(3):  # fresh features each epoch: the centroid variance is non-zero from the 2nd on
        feats, true, given, centres = _blobs(counts, noise_rate=0.3, seed=epoch)
        tau = dynamic_threshold(30 + epoch, 1.005, len(counts))
        prob, confident = sfa_select(feats, given, _abc_confidence(feats, given, centres), c, threshold=tau,
                                     num_classes=len(counts), gen=g, min_sampled=0)
    assert float(c.var.sum()) > 0
    clean, sel = given == true, prob > 0.5
    # symmetric noise into a tail class outnumbers its clean samples; the selection must still find them
    tail = given == 4
    assert int((tail & ~clean).sum()) > int((tail & clean).sum())
    for rows in (torch.ones_like(tail), tail):
        tp = int((sel & clean & rows).sum())
        assert tp / int((clean & rows).sum()) > 0.95  # recall of the clean samples
        assert tp / int((sel & rows).sum()) > 0.95  # precision of the selection
    assert float(confident[~clean].float().mean()) < 0.1 < 0.9 < float(confident[clean].float().mean())


# ---------------------------------------------------------------------------- the method's heads
def test_heads_features_warmup_loss_and_prediction():
    ctx = _ctx()
    m = build_method(MethodConfig(name="sfa", params={"warmup_epochs": 2}), ctx)
    torch.manual_seed(0)
    models = m.build_models(lambda: build_model("mlp", (6,), 4, width=8))
    assert set(models) == {"net", "peer", "abc_net", "abc_peer"}
    x, y = torch.randn(12, 6), torch.randint(0, 4, (12,))
    with torch.no_grad():
        logits, abc = m._heads(models, "net", x)
        assert torch.allclose(m._feats["net"], models["net"].features(x))  # hook: the input of fc
        assert classifier_head(models["net"]) is models["net"].fc
        assert torch.allclose(abc, models["abc_net"](models["net"].features(x)))
        out = m.training_step(models, [x, x + 1], y, torch.arange(12), 0)
        lp = log_prior(ctx.class_counts, "cpu")
        want = sum(F.cross_entropy(models[k](x), y) + F.cross_entropy(models[f"abc_{k}"](models[k].features(x)) + lp, y)
                   for k in ("net", "peer"))
        assert float(out["loss"]) == pytest.approx(float(want), rel=1e-6)
        pred = m.predict_logits(models, x)
        total = sum(h for k in ("net", "peer") for h in m._heads(models, k, x))
    assert torch.allclose(pred.exp().sum(1), torch.ones(12), atol=1e-5)
    assert torch.equal(pred.argmax(1), total.argmax(1))  # the official sum of the four heads' logits
    assert torch.allclose(m.label_log_prior(), 0.5 * lp)  # half the heads are balanced
    m.clean_counts = {"net": torch.tensor([10.0, 10, 10, 10]), "peer": torch.tensor([30.0, 10, 0, 5])}
    assert torch.allclose(m.abc_log_prior("net"), log_prior([30, 10, 1, 5], "cpu"))  # the peer's clean counts
    assert m.sample_selection() is None  # nothing selected yet


def test_sfa_rejects_bad_params():
    for bad in ({"beta": 1.0}, {"predict": "sum"}, {"sample_rate": 0}):
        with pytest.raises(InputError, match="sfa needs"):
            build_method(MethodConfig(name="sfa", params=bad), _ctx())


# ---------------------------------------------------------------------------- (4) runs
SETS = ["data.n_max=150", "data.imbalance_ratio=10", "data.noise_rate=0.3", "optim.batch_size=64",
        "method.params.warmup_epochs=1", "model.name=mlp"]


def _sets(extra=()):
    return [a for o in SETS + list(extra) for a in ("--set", o)]


def test_cli_run_selection_and_resume(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["train", "--method", "sfa", *_sets(["optim.epochs=2"]), "--out", str(out), "-q"]) == 0
    rep = json.loads((out / "eval.json").read_text())
    assert rep["method"] == "sfa" and 0.1 < rep["last"]["top1"] <= 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "sfa_threshold" not in rows[0] and rows[1]["sfa_threshold"] == pytest.approx(1.005 ** 2 / 10)
    assert 0 < rows[1]["labelled_net"] < 1
    with np.load(out / "selection.npz") as z, np.load(out / "predictions.npz") as p:
        assert z["clean"].shape == p["train_noisy"].shape
        kept = z["clean"] > 0.5
        assert np.array_equal(z["label"][kept], p["train_noisy"][kept]) and (z["label"][~kept] == -1).all()
    # resume after 2 of 3 epochs (stochastic centroid draws on: min_sampled=0) equals the uninterrupted run
    over = ["method.name=sfa", "optim.epochs=3", "method.params.min_sampled=0"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", "--method", "sfa", *_sets(over[1:]), "--out", str(full), "-q"]) == 0
    assert train_run(load_config(None, SETS + over), part, stop_after=2) is None
    assert main(["train", "--method", "sfa", *_sets(over[1:]), "--out", str(part), "--resume", "-q"]) == 0
    a, b = load_checkpoint(full / "checkpoints/last.pt"), load_checkpoint(part / "checkpoints/last.pt")
    assert all(torch.equal(a["models"][n][k], b["models"][n][k]) for n in a["models"] for k in a["models"][n])
    assert torch.equal(a["method"]["centroids"]["net"]["sq"], b["method"]["centroids"]["net"]["sq"])
    for f in ("predictions.npz", "selection.npz"):
        with np.load(full / f) as x, np.load(part / f) as y:
            assert x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files)
    capsys.readouterr()
