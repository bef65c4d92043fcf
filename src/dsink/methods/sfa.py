"""SFA: Stochastic Feature Averaging (Hao Li, Tong Wei et al., IJCAI 2023, "Stochastic Feature Averaging for
Learning with Long-Tailed Noisy Labels"; official code: github.com/HotanLee/SFA).

SFA selects clean samples by their distance to class centroids in the penultimate feature space and
trains an auxiliary balanced classifier (ABC) beside the standard one. It is built on the DivideMix /
RoLT+ code line: two networks, a warm-up, then a selection at the start of every epoch and a co-divided
MixMatch step. Per network, each selection

1. passes the un-augmented training set once: penultimate features ``f_i`` (the input of the final
   Linear layer, taken with a forward hook) and the ABC's confidence ``q_i`` in the given label;
2. centres the features on their mean and L2-normalises them (``cl2n``, as the official nearest-class-mean
   classifier does);
3. estimates each class's *instant centroid* from its samples with ``q_i > tau_t``, the dynamic threshold
   ``tau_t = phi^t / C`` (``t``: the 1-based epoch; it rises as training goes on and the ABC's confidences
   grow, so memorised noisy samples stop entering the centroids);
4. updates the class centroid's Gaussian: running first and second moments ``m = beta m + (1 - beta) c``,
   ``s = beta s + (1 - beta) c^2`` (started at ``c, c^2``), variance ``s - m^2``;
5. draws a centroid per class from ``N(m, diag(s - m^2))`` (classes with more than ``min_sampled``
   confident samples; the others use ``m``), ``sample_rate`` times, and sums each sample's squared
   distances to its labelled class's draws;
6. per class, min-max normalises those distances and fits a two-component 1-D GMM: the posterior of the
   small-distance component is the sample's clean probability (``fit_gmm_1d`` of
   :mod:`dsink.methods.dividemix`, with scikit-learn's defaults that the official code uses).

Training: warm-up epochs give each network CE on its standard head plus the balanced softmax on its ABC
(with the noisy-label histogram, the only counts a method may use); later epochs run DivideMix's MixMatch
step on the peer's division (same targets, mixing, ramp and uniform-prior regulariser as
:mod:`dsink.methods.dividemix`) and add the balanced versions of both MixMatch terms on the ABC, with the
class counts of the peer's selected clean samples. Under torchrun every process makes the same full pass
over the training set and the same draws (the generator advances alike on all), so the centroid moments
and the division need no merge.

Where ours differs from the paper and the official code (HotanLee/SFA, ``Train_cifar.py``), and why:

* one training loop: the two networks are updated in the same step on each other's division, as in our
  DivideMix (the original trains net 1 for an epoch, then net 2, over separate labelled/unlabelled loaders);
  labelled and unlabelled samples share the batch instead of two loaders, and lambda_u ramps per epoch;
* the saved prediction (``predict="ensemble"``, the default) is the normalised geometric mean of the four
  heads' softmax (both networks, standard head and ABC): the same argmax as the official sum of the four
  logits, without a softmax four times too sharp; ``predict="balanced"`` saves the mean ABC posterior. For the
  label-correction metrics the ensemble adds back half the ABCs' prior (``label_log_prior``), which assumes the
  standard heads follow the training distribution; DivideMix's uniform-prior regulariser pulls them part of the
  way towards balanced, so the shift is approximate;
* a class with no sample above the confidence threshold takes its centroid from all its samples (the
  official code averages an empty set: NaN); a class with no selected clean sample counts as one in the
  ABC's prior (the official ``log 0`` is infinite);
* the GMM starts from the distance terciles (``fit_gmm_1d``) instead of scikit-learn's k-means init.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError
from ..models.heads import centred_l2, classifier_head
from ..losses import log_prior, logit_adjusted_ce
from .base import register_method
from .dividemix import DivideMix, fit_gmm_1d, semi_losses, uniform_prior_penalty

NETS = ("net", "peer")
PREDICTIONS = ("ensemble", "balanced")
# the official code fits sklearn's GaussianMixture(2) with its defaults: max_iter 100, tol 1e-3, reg_covar 1e-6
GMM_OPTIONS = {"max_iter": 100, "tol": 1e-3, "reg": 1e-6}


@dataclass
class SFAParams:
    """Defaults of the paper and its official CIFAR recipe (HotanLee/SFA ``Train_cifar.py``):
    EMA smoothing ``beta`` 0.99 and dynamic-threshold base ``phi`` 1.005 (paper and code), one centroid
    draw per selection (``--sample_rate 1``), centroids drawn only for classes with more than 300
    confident samples (code), warm-up 30 epochs (``--warm_up 30``); the MixMatch part is DivideMix's
    CIFAR recipe as the code inherits it: p_threshold 0.5, T 0.5, alpha 4, lambda_u 25, ramp-up 16
    epochs. ``predict``: ``ensemble`` (the code's test-time sum over both heads of both networks) or
    ``balanced`` (the auxiliary balanced classifiers only)."""

    warmup_epochs: int = 30
    beta: float = 0.99
    phi: float = 1.005
    sample_rate: int = 1
    min_sampled: int = 300
    p_threshold: float = 0.5
    temperature: float = 0.5
    alpha: float = 4.0
    lambda_u: float = 25.0
    rampup_epochs: int = 16
    predict: str = "ensemble"


def _check(p: SFAParams) -> None:
    ok = (0 <= p.beta < 1 and p.phi > 0 and p.sample_rate >= 1 and p.min_sampled >= 0 and p.warmup_epochs >= 0
          and 0 <= p.p_threshold <= 1 and p.temperature > 0 and p.alpha > 0 and p.lambda_u >= 0
          and p.rampup_epochs >= 0 and p.predict in PREDICTIONS)
    if not ok:
        raise InputError("sfa needs method.params 0 <= beta < 1, phi > 0, sample_rate >= 1, min_sampled >= 0, "
                         "warmup_epochs >= 0, 0 <= p_threshold <= 1, temperature > 0, alpha > 0, lambda_u >= 0, "
                         f"rampup_epochs >= 0 and predict in {PREDICTIONS}; got {p}")


# ---------------------------------------------------------------------------- selection (pure functions)
def dynamic_threshold(epoch: int, phi: float, num_classes: int) -> float:
    """SFA's confidence threshold ``tau_t = phi^t / C`` at 0-based ``epoch`` (``t = epoch + 1``, the official
    1-based epoch); with ``phi > 1`` it rises from about the uniform confidence ``1 / C``."""
    return phi ** (epoch + 1) / num_classes


def instant_centroids(z: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor,
                      num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean of ``z`` (N, D) over the rows with ``keep`` (bool (N,)), by ``labels`` (N,).

    A class with no kept row falls back to all its rows; a class with no row gets zeros. Returns the
    centroids (C, D) and the number of kept rows per class (C,)."""
    onehot = F.one_hot(labels, num_classes).to(z.dtype)
    w = onehot * keep.to(z.dtype)[:, None]
    n_kept = w.sum(0)
    empty = n_kept == 0
    w[:, empty] = onehot[:, empty]
    return (w.T @ z) / w.sum(0).clamp_min(1)[:, None], n_kept


class StochasticCentroids:
    """The Gaussian over each class centroid: running (EMA, ``beta``) first and second moments, (C, D) each."""

    def __init__(self, beta: float):
        self.beta = beta
        self.mean: torch.Tensor | None = None
        self.sq: torch.Tensor | None = None

    def update(self, centroids: torch.Tensor) -> None:
        """Fold in one epoch's instant centroids (C, D); the first call starts the moments at them."""
        c = centroids.float()
        if self.mean is None:
            self.mean, self.sq = c.clone(), c * c
            return
        self.mean = self.beta * self.mean + (1 - self.beta) * c
        self.sq = self.beta * self.sq + (1 - self.beta) * c * c

    @property
    def var(self) -> torch.Tensor:
        """Per-coordinate variance ``s - m^2`` (clipped at 0), (C, D)."""
        return (self.sq - self.mean ** 2).clamp_min(0)

    def draw(self, sampled: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Centroids (C, D): ``m + sqrt(var) * eps`` (``eps ~ N(0, I)`` from ``gen``, a CPU generator) for the
        classes with ``sampled`` (bool (C,)), ``m`` for the others. Draws ``eps`` for every class either way."""
        eps = torch.randn(self.mean.shape, generator=gen).to(self.mean.device)
        return torch.where(sampled[:, None], self.mean + self.var.sqrt() * eps, self.mean)

    def state_dict(self) -> dict[str, Any]:
        """The moments (None before the first update)."""
        return {"mean": self.mean, "sq": self.sq}

    def load_state_dict(self, state: dict[str, Any], device) -> None:
        """Restore :meth:`state_dict` onto ``device``."""
        self.mean = None if state.get("mean") is None else state["mean"].to(device)
        self.sq = None if state.get("sq") is None else state["sq"].to(device)


def clean_posterior(z: torch.Tensor, labels: torch.Tensor, draws: list[torch.Tensor], num_classes: int) -> torch.Tensor:
    """Clean probability (N,) from the squared distance of each row of ``z`` (N, D) to its labelled class's
    drawn centroids (summed over ``draws``, each (C, D)): per class, distances min-max normalised, a 1-D
    two-component GMM, posterior of the small-distance component (0.5 for a class of one sample)."""
    dist = sum(((z - c[labels]) ** 2).sum(1) for c in draws)
    prob = torch.zeros(len(z), device=z.device)
    for c in labels.unique().tolist():
        rows = labels == c
        d = dist[rows]
        d = (d - d.min()) / (d.max() - d.min()).clamp_min(1e-12)
        prob[rows] = fit_gmm_1d(d, **GMM_OPTIONS).to(z.device)
    return prob


def sfa_select(feats: torch.Tensor, labels: torch.Tensor, conf: torch.Tensor, centroids: StochasticCentroids, *,
               threshold: float, num_classes: int, gen: torch.Generator, sample_rate: int = 1,
               min_sampled: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """One SFA selection: the clean probability (N,) of each sample and which samples were confident (N,).

    ``feats`` (N, D) penultimate features, ``labels`` (N,) given labels, ``conf`` (N,) the balanced
    classifier's probability of the given label; ``centroids`` is updated in place."""
    z = centred_l2(feats)
    confident = conf > threshold
    instant, n_kept = instant_centroids(z, labels, confident, num_classes)
    centroids.update(instant)
    sampled = n_kept > min_sampled
    draws = [centroids.draw(sampled, gen) for _ in range(sample_rate)]
    return clean_posterior(z, labels, draws, num_classes), confident


# ---------------------------------------------------------------------------- the method
@register_method
class SFA(DivideMix):
    """SFA: stochastic class-centroid selection, auxiliary balanced classifiers, co-divided MixMatch."""

    name = "sfa"
    role = "noise"
    description = ("SFA (Li et al., IJCAI 2023): stochastic feature averaging of class centroids selects clean "
                   "samples, auxiliary balanced classifier, co-divided MixMatch, two networks")
    Params = SFAParams
    views = 2

    def __init__(self, params, ctx):
        _check(params)
        super().__init__(params, ctx)  # DivideMix: the seeded generator, Beta draws, clean_prob per network
        self.centroids = {k: StochasticCentroids(params.beta) for k in NETS}
        self.clean_counts: dict[str, torch.Tensor] = {}  # selected clean samples per class, by network
        self._feats: dict[str, torch.Tensor] = {}  # the latest penultimate features of each network

    def build_models(self, make_model):
        nets = {k: make_model() for k in NETS}
        heads = {}
        for k, net in nets.items():
            fc = classifier_head(net)
            fc.register_forward_hook(self._feature_hook(k))
            heads[f"abc_{k}"] = nn.Linear(fc.in_features, self.ctx.num_classes).to(self.ctx.device)
        return {**nets, **heads}

    def _feature_hook(self, key: str):
        def hook(module, inputs, output):
            self._feats[key] = inputs[0]
        return hook

    def _heads(self, models, key: str, x) -> tuple[torch.Tensor, torch.Tensor]:
        """Standard and balanced logits (float32) of network ``key`` on ``x``."""
        logits = models[key](x).float()
        return logits, models[f"abc_{key}"](self._feats[key]).float()

    def abc_log_prior(self, key: str) -> torch.Tensor:
        """The log prior network ``key``'s ABC is balanced against: the noisy-label counts before the first
        selection, then the peer's selected clean counts (the official ``tmp_img_num_list``)."""
        peer = NETS[1 - NETS.index(key)]
        if peer not in self.clean_counts:
            return self.log_prior
        return log_prior(self.clean_counts[peer], self.ctx.device)

    # ------------------------------------------------------------------ selection
    @torch.no_grad()
    def _features(self, trainer, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features (N, D) and ABC confidence in the given label (N,) of the training set."""
        net, head = trainer.models[key], trainer.models[f"abc_{key}"]
        net.eval()
        head.eval()
        feats, conf = [], []
        try:
            for idx, raw in trainer.batches("train"):
                _, abc = self._heads(trainer.models, key, trainer.pipeline(raw))
                feats.append(self._feats[key].float())
                conf.append(abc.softmax(1).gather(1, trainer.train_y[idx, None]).squeeze(1))
        finally:
            net.train()
            head.train()
        return torch.cat(feats), torch.cat(conf)

    def on_epoch_start(self, epoch, trainer):
        if epoch < self.p.warmup_epochs:
            self.clean_prob = {}
            return {}
        c, y = self.ctx.num_classes, trainer.train_y
        tau = dynamic_threshold(epoch, self.p.phi, c)
        row = {"sfa_threshold": tau}
        for k in NETS:
            feats, conf = self._features(trainer, k)
            prob, confident = sfa_select(feats, y, conf, self.centroids[k], threshold=tau, num_classes=c,
                                         gen=self.gen, sample_rate=self.p.sample_rate, min_sampled=self.p.min_sampled)
            self.clean_prob[k] = prob
            self.clean_counts[k] = torch.bincount(y[prob > self.p.p_threshold], minlength=c).float()
            row[f"labelled_{k}"] = float((prob > self.p.p_threshold).float().mean())
            row[f"confident_{k}"] = float(confident.float().mean())
        self._given = y  # DivideMix.sample_selection: the mean clean probability, -1 where unlabelled
        return row

    # ------------------------------------------------------------------ training
    def training_step(self, models, x, y, idx, epoch):
        x1, x2 = x
        if epoch >= self.p.warmup_epochs:
            return self._mixmatch_step(models, x1, x2, y, idx, epoch)
        loss, logs, first = 0.0, {}, None
        for k in NETS:
            logits, abc = self._heads(models, k, x1)
            first = logits if first is None else first
            ce, bs = F.cross_entropy(logits, y), logit_adjusted_ce(abc, y, self.log_prior)
            loss = loss + ce + bs
            logs[f"bs_{k}"] = bs.detach()
        return {"loss": loss, "logits": first, **logs}

    def _mixmatch_step(self, models, x1, x2, y, idx, epoch):
        """DivideMix's step on the standard heads plus its balanced version on the ABCs (balanced against the
        peer's clean counts)."""
        probs, guess_u = self._guesses([(k, models[k]) for k in NETS], x1, x2)
        onehot = F.one_hot(y, self.ctx.num_classes).float()
        lam_u = self.p.lambda_u * self._ramp(epoch)
        total, logs = 0.0, {}
        for i, k in enumerate(NETS):
            w = self.clean_prob[NETS[1 - i]][idx]
            mixed_x, mixed_t, is_lab, lab = self._mixed_batch(probs[k], w, onehot, guess_u, x1, x2)
            logits, abc = self._heads(models, k, mixed_x)
            lx, lu = semi_losses(logits, mixed_t, is_lab)
            bx, bu = semi_losses(abc + self.abc_log_prior(k), mixed_t, is_lab)
            total = total + lx + lam_u * lu + bx + lam_u * bu + uniform_prior_penalty(logits)
            logs.update({f"lx_{k}": lx.detach(), f"lu_{k}": lu.detach(), f"bx_{k}": bx.detach(),
                         f"labelled_frac_{k}": lab.float().mean()})
        return {"loss": total, "logits": probs[NETS[0]][0].log(), **logs}

    # ------------------------------------------------------------------ prediction
    def predict_logits(self, models, x):
        outs = [self._heads(models, k, x) for k in NETS]
        if self.p.predict == "balanced":
            return torch.stack([abc.softmax(1) for _, abc in outs]).mean(0).clamp_min(1e-12).log()
        return torch.stack([h.log_softmax(1) for pair in outs for h in pair]).mean(0).log_softmax(1)

    def label_log_prior(self):
        """The ABCs divide out the prior they are balanced against; in the ensemble they are half the heads
        (the standard heads are taken to follow the training distribution), so half that prior is added back."""
        share = 1.0 if self.p.predict == "balanced" else 0.5
        return share * torch.stack([self.abc_log_prior(k) for k in NETS]).mean(0)

    # ------------------------------------------------------------------ state
    def state_dict(self):
        return {"generator": self.gen.get_state(),
                "centroids": {k: c.state_dict() for k, c in self.centroids.items()},
                "clean_prob": dict(self.clean_prob), "clean_counts": dict(self.clean_counts)}

    def load_state_dict(self, state):
        dev = self.ctx.device
        if "generator" in state:
            self.gen.set_state(state["generator"])
        for k, c in state.get("centroids", {}).items():
            self.centroids[k].load_state_dict(c, dev)
        self.clean_prob = {k: v.to(dev) for k, v in state.get("clean_prob", {}).items()}
        self.clean_counts = {k: v.to(dev) for k, v in state.get("clean_counts", {}).items()}
