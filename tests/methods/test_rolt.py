"""RoLT: prototype-distance selection against the small-loss rule on long-tailed blobs, the per-class and global
mixtures, the soft pseudo-labels and their loss, feature extraction, and a short run that resumes."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dsink.cli import main
from dsink.config import MethodConfig, load_config
from dsink.errors import InputError
from dsink.losses import soft_ce
from dsink.methods import MethodContext, build_method
from dsink.methods.dividemix import fit_gmm_1d
from dsink.methods.rolt import (
    _keep,
    class_means,
    sq_distances,
    component_ce,
    gmm_clean_prob,
    prototype_selection,
    soft_label_components,
    soft_targets,
)
from dsink.models import build_model
from dsink.models.heads import centred_l2
from dsink.runs import load_checkpoint
from dsink.train import train_run

COUNTS = (500, 250, 120, 60, 30, 15)
TAIL = 3  # classes 3, 4, 5: at most 60 samples


def _blobs(seed=1, sep=2.0, noise=0.3, dim=16):
    """Gaussian blobs (unit variance, means ``sep`` from the origin) of long-tailed sizes ``COUNTS``; a share
    ``noise`` of labels flipped to another class drawn in proportion to its size (noise lands on the head)."""
    g = torch.Generator().manual_seed(seed)
    c = len(COUNTS)
    mu = torch.randn(c, dim, generator=g)
    mu = sep * mu / mu.norm(dim=1, keepdim=True)
    true = torch.cat([torch.full((n,), k) for k, n in enumerate(COUNTS)])
    x = mu[true] + torch.randn(len(true), dim, generator=g)
    w = torch.tensor(COUNTS, dtype=torch.float).repeat(len(true), 1)
    w[torch.arange(len(true)), true] = 0
    other = torch.multinomial(w, 1, generator=g).squeeze(1)
    y = torch.where(torch.rand(len(true), generator=g) < noise, other, true)
    return x, y, true


def _ctx(counts=COUNTS, epochs=10, seed=0):
    return MethodContext(num_classes=len(counts), class_counts=np.array(counts), num_train=int(sum(counts)),
                         epochs=epochs, device=torch.device("cpu"), noise_rate=0.3, seed=seed)


def test_distance_rule_keeps_clean_tail_samples_that_the_small_loss_rule_drops():
    x, y, true = _blobs()
    c = len(COUNTS)
    torch.manual_seed(0)
    lin = nn.Linear(x.shape[1], c)  # the model: CE on the noisy long-tailed labels; its features are x
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(lin(x), y).backward()
        opt.step()
    with torch.no_grad():
        loss = F.cross_entropy(lin(x), y, reduction="none")
    small_loss = fit_gmm_1d((loss - loss.min()) / (loss.max() - loss.min())) > 0.5  # DivideMix's rule
    sel = prototype_selection(x, y, c)
    clean = y == true
    tail = clean & (y >= TAIL)
    recall_small, recall_proto = float(small_loss[tail].float().mean()), float(sel.keep[tail].float().mean())
    assert recall_small < 0.5 and recall_proto > 0.85, (recall_small, recall_proto)  # 0.42 and 0.90
    # not by keeping everything: most noisy labels are flagged and the kept set is clean
    assert float((~sel.keep[~clean]).float().mean()) > 0.85
    assert float(clean[sel.keep].float().mean()) > 0.9
    assert sel.clean.shape == (len(y),) and sel.ncm_logits.shape == (len(y), c)
    assert torch.equal(sel.keep, prototype_selection(x, y, c).keep)  # deterministic


def test_per_class_and_global_mixtures():
    g = torch.Generator().manual_seed(0)
    # class 0: tight distances with 5 outliers; class 1: ten times larger distances with 5 outliers
    d0 = torch.cat([0.10 + 0.01 * torch.randn(40, generator=g), 0.30 + 0.01 * torch.randn(5, generator=g)])
    d1 = 10 * torch.cat([0.10 + 0.01 * torch.randn(40, generator=g), 0.30 + 0.01 * torch.randn(5, generator=g)])
    d, labels = torch.cat([d0, d1]), torch.tensor([0] * 45 + [1] * 45)
    outlier = torch.tensor(([False] * 40 + [True] * 5) * 2)
    per_class = gmm_clean_prob(d, labels, 2, cls_ind=True)
    # cls_ind: each class is fitted on its own min-max-normalised distances, so a class's scale does not matter
    assert torch.equal((per_class > 0.5), ~outlier)
    assert torch.allclose(per_class[:45], per_class[45:], atol=1e-5)
    # one mixture over all globally normalised distances: the classes share one scale, so the tight core of
    # class 0 is the clean component and the whole of the looser class 1 is flagged
    one = gmm_clean_prob(d, labels, 2, cls_ind=False)
    norm = (d.double() - d.min()) / (d.max() - d.min())
    assert torch.allclose(one, fit_gmm_1d(norm, max_iter=100, tol=1e-3, reg=1e-6), atol=1e-6)
    assert torch.equal(one > 0.5, torch.arange(90) < 40)
    # a class of one sample is its own prototype: clean
    assert float(gmm_clean_prob(torch.tensor([0.1, 0.2, 0.9, 0.3]), torch.tensor([0, 0, 0, 1]), 2, True)[3]) == 1.0


def test_a_class_with_nothing_kept_keeps_everything():
    prob = torch.tensor([0.9, 0.2, 0.8, 0.3, 0.1, 0.5])
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    keep, prob2 = _keep(prob, labels, 3, 0.5)
    assert keep.tolist() == [True, False, True, True, True, True]  # classes 1 and 2: nothing above 0.5
    assert torch.equal(prob2, torch.tensor([0.9, 0.2, 0.8, 1.0, 1.0, 1.0]))


def test_prototypes_are_class_means_of_the_normalised_features():
    g = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(30, 4, generator=g) + 3, torch.randint(0, 3, (30,), generator=g)
    z = centred_l2(feats)
    assert torch.allclose(z.norm(dim=1), torch.ones(30))
    keep = torch.rand(30, generator=g) > 0.3
    protos, present = class_means(z, labels, 4, keep, chunk=7)  # chunks of 7 rows: the sums still add up
    for c in range(3):
        assert torch.allclose(protos[c], z[(labels == c) & keep].mean(0), atol=1e-6)
    assert present.tolist() == [True, True, True, False]
    d = sq_distances(z, protos, present)
    assert torch.allclose(d[:, :3], torch.cdist(z, protos[:3]) ** 2, atol=1e-5) and bool((d[:, 3] == 4).all())


def test_soft_labels_sum_to_one_and_are_the_given_label_for_kept_samples():
    c = 5
    y, keep = torch.tensor([0, 1, 2, 3]), torch.tensor([True, False, True, False])
    erm, ncm = torch.tensor([4, 4, 4, 3]), torch.tensor([1, 2, 0, 0])
    labels, coef = soft_label_components(y, keep, [(erm, 0.4), (ncm, 0.2)], 0.2, c)
    assert labels.shape == (4, 3 + c) and float(coef.sum()) == pytest.approx(1.0)
    t = soft_targets(labels, coef, c)
    assert torch.allclose(t.sum(1), torch.ones(4))
    assert torch.allclose(t[keep], F.one_hot(y[keep], c).float(), rtol=0, atol=1e-6)  # up to float rounding
    want = torch.full((c,), 0.2 / c)
    want[4] += 0.4  # ERM guess
    want[2] += 0.2  # nearest-prototype guess
    want[1] += 0.2  # given label (label smoothing)
    assert torch.allclose(t[1], want)
    want3 = torch.full((c,), 0.2 / c)
    want3[3] += 0.4 + 0.2  # ERM guess = given label
    want3[0] += 0.2
    assert torch.allclose(t[3], want3)
    logits = torch.randn(4, c, generator=torch.Generator().manual_seed(0))
    assert float(component_ce(logits, labels, coef)) == pytest.approx(float(soft_ce(logits, t)), rel=1e-6)
    w = torch.tensor([0.5, 1.0, 2.0, 0.7, 3.0])  # class weights: each term a weighted mean as F.cross_entropy
    want_w = sum(float(coef[k]) * F.cross_entropy(logits, labels[:, k], weight=w) for k in range(labels.shape[1]))
    assert float(component_ce(logits, labels, coef, w)) == pytest.approx(float(want_w), rel=1e-5)


class _Trainer:
    """What RoLT's epoch hook uses of the engine, over a blob training set."""

    def __init__(self, net, x, y):
        self.models, self.train_x, self.train_y = {"net": net}, x, y
        self.device, self.eval_batch_size = torch.device("cpu"), 128

    def pipeline(self, raw):
        return raw

    def batches(self, split, rows=None, batch_size=None):
        rows = torch.arange(len(self.train_x)) if rows is None else rows
        for idx in rows.split(batch_size or self.eval_batch_size):
            yield idx, self.train_x[idx]


def test_method_selects_after_the_warm_up_relabels_and_restores_its_state():
    x, y, true = _blobs()
    m = build_method(MethodConfig(name="rolt", params={"warmup_epochs": 2, "drw_start": 0.5}), _ctx(epochs=10))
    torch.manual_seed(0)
    net = m.build_models(lambda: build_model("mlp", (x.shape[1],), len(COUNTS), width=32))["net"]
    trainer = _Trainer(net, x, y)
    assert m.on_epoch_start(1, trainer) == {} and m.sample_selection() is None
    idx = torch.arange(40)
    with torch.no_grad():
        warm = m.training_step({"net": net}, x[idx], y[idx], idx, 1)["loss"]
        assert float(warm) == pytest.approx(float(F.cross_entropy(net(x[idx]), y[idx])), rel=1e-6)
    row = m.on_epoch_start(2, trainer)
    assert 0 < row["rolt_kept"] <= 1 and 0 <= row["rolt_relabelled"] < 1
    sel = m.sample_selection()
    assert sel["clean"].dtype == np.float32 and sel["label"].dtype == np.int64 and sel["clean"].shape == (len(y),)
    kept = m.keep.numpy()
    assert np.array_equal(sel["label"][kept], y.numpy()[kept])  # kept: the given label
    assert np.array_equal(sel["label"][~kept], m.guess_erm.numpy()[~kept])  # flagged: the ERM guess
    labels, coef = m.targets(y[idx], idx, 2)
    assert torch.allclose(soft_targets(labels, coef, len(COUNTS)).sum(1), torch.ones(40))
    assert m.class_weights(2) is None and m.class_weights(5) is not None  # DRW from 0.5 x 10 epochs
    # DRW: the flagged samples' labels freeze at the first DRW selection, targets 0.5 surrogate + 0.5 uniform
    m.on_epoch_start(5, trainer)
    frozen = m.surrogate.clone()
    labels, coef = m.targets(y, torch.arange(len(y)), 5)
    t = soft_targets(labels, coef, len(COUNTS))
    flagged = ~m.keep
    assert torch.allclose(t[flagged].max(1).values, torch.full((int(flagged.sum()),), 0.5 + 0.5 / len(COUNTS)))
    assert torch.allclose(t[m.keep], F.one_hot(y[m.keep], len(COUNTS)).float(), rtol=0, atol=1e-6)
    out = m.training_step({"net": net}, x[idx], y[idx], idx, 5)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    # resume: a fresh method with the saved state continues identically
    again = build_method(MethodConfig(name="rolt", params={"warmup_epochs": 2, "drw_start": 0.5}), _ctx(epochs=10))
    again.load_state_dict(m.state_dict())
    assert torch.equal(again.surrogate, frozen)
    r1, r2 = m.on_epoch_start(6, trainer), again.on_epoch_start(6, trainer)
    assert r1 == r2 and torch.equal(m.ema_erm, again.ema_erm) and torch.equal(m.surrogate, frozen)


def test_bad_params_are_input_errors():
    with pytest.raises(InputError, match="sum of at most 1"):
        build_method(MethodConfig(name="rolt", params={"erm_weight": 0.9}), _ctx())
    with pytest.raises(InputError, match="ema"):
        build_method(MethodConfig(name="rolt", params={"ema": 1.0}), _ctx())


SMALL = ["data.n_max=150", "data.imbalance_ratio=10", "data.noise_rate=0.3", "optim.batch_size=64",
         "optim.epochs=2", "method.params.warmup_epochs=1", "model.name=mlp"]


def test_cli_run_selects_after_the_warm_up_and_resumes_bit_identically(tmp_path, capsys):
    full = tmp_path / "r"
    sets = [a for o in SMALL for a in ("--set", o)]
    assert main(["train", "--method", "rolt", *sets, "--out", str(full), "-q"]) == 0
    rep = json.loads((full / "eval.json").read_text())
    assert rep["method"] == "rolt" and 0.1 < rep["last"]["top1"] <= 1
    rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert "rolt_kept" not in rows[0] and 0 < rows[1]["rolt_kept"] <= 1
    with np.load(full / "selection.npz") as z:
        sel = {k: z[k] for k in z.files}
    with np.load(full / "predictions.npz") as z:
        given = z["train_noisy"]
    assert sel["clean"].dtype == np.float32 and sel["label"].dtype == np.int64
    assert sel["clean"].shape == sel["label"].shape == given.shape
    kept = sel["clean"] > 0.5
    assert 0 < kept.mean() < 1 and np.array_equal(sel["label"][kept], given[kept])
    # stop after the warm-up epoch, then --resume: the same weights and the same selection
    part = tmp_path / "part"
    assert train_run(load_config(None, SMALL + ["method.name=rolt"]), part, stop_after=1) is None
    assert not (part / "selection.npz").exists()
    assert main(["train", "--resume", "--out", str(part), "-q"]) == 0
    a, b = (load_checkpoint(p / "checkpoints/last.pt") for p in (full, part))
    assert all(torch.equal(a["models"]["net"][k], b["models"]["net"][k]) for k in a["models"]["net"])
    assert torch.equal(a["method"]["ema_erm"], b["method"]["ema_erm"])
    with np.load(part / "selection.npz") as z:
        assert all(np.array_equal(sel[k], z[k]) for k in sel)
    capsys.readouterr()
