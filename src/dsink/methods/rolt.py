"""RoLT (Wei, Shi, Tu & Li, "Robust Long-Tailed Learning under Label Noise", arXiv 2108.11569, 2021; journal
version Frontiers of Computer Science 2025): prototype-distance noise detection, soft pseudo-labels, DRW.

The small-loss rule fails on long-tailed data: a network trained on it gives clean tail samples large losses,
so a loss mixture calls them noisy. RoLT judges a label by the distance of the sample's *feature* to the
prototype of its labelled class instead. How it runs inside the one training loop:

* warm-up epochs (``warmup_epochs``): CE on the given labels (class-balanced weights once DRW has started);
* at the start of every later epoch the network's penultimate features ``f_i`` and logits of the
  un-augmented training set are taken in eval mode. Features are centred by their mean and L2-normalised
  (the original's ``cl2n`` nearest-class-mean features); the prototype of class c is the mean normalised
  feature of the samples labelled c, and ``d_i = ||z_i - proto_{y_i}||^2``;
* a two-component 1-D Gaussian mixture on ``d`` gives the clean probability ``w_i`` (posterior of the
  small-distance component): one mixture per class on that class's min-max-normalised distances
  (``cls_ind=True``, the original's ``--cls_ind`` and its only choice in plain RoLT) or one mixture over all
  samples' globally min-max-normalised distances (``cls_ind=False``, the original RoLT+ default). A sample
  is kept when ``w_i > p_threshold``; a class of which nothing would be kept keeps every sample.
  ``refine`` times, the prototypes are recomputed from the kept samples only and the mixture refitted;
* each epoch's ERM logits and nearest-class-mean logits (``-||z_i - proto_c||^2``) enter exponential moving
  averages (``ema``); their arg-maxes are the two guessed labels of a sample;
* a kept sample is trained on its given one-hot label; a flagged one on the soft label
  ``erm_weight * onehot(ERM guess) + ncm_weight * onehot(NCM guess) + given_weight * onehot(given)
  + (rest) * uniform`` (diverse label guessing plus label smoothing of the given label);
* from ``drw_start`` x epochs on (DRW), the flagged samples' labels are frozen at the ERM guess of the first
  DRW epoch ("surrogate" labels), their soft label becomes ``(1 - drw_smoothing) * onehot(surrogate) +
  drw_smoothing * uniform``, and every soft-label term is a CE weighted by class-balanced weights
  (effective number, ``beta``) of the surrogate-label histogram, normalised per term as PyTorch's
  weighted mean.

Where this version differs from the authors' code (github.com/Stomach-ache/RoLT), and why:

* selection starts after the warm-up, not at epoch 1, so the moving averages start there (the original
  also spends a feature pass on each warm-up epoch only to feed the averages); the original's bias
  correction of the averages is left out: it scales all logits of a sample alike, so no arg-max changes;
* the mixtures are :func:`dsink.methods.dividemix.fit_gmm_1d` (EM from the lower/upper thirds, run with
  scikit-learn's default ``max_iter=100, tol=1e-3, reg_covar=1e-6``) instead of scikit-learn's k-means
  initialised ``GaussianMixture``; both use the refined distances (RoLT+'s global option used the unrefined),
  and both keep a whole class of which nothing would be kept (the original does so per class only);
* in the DRW phase a sample kept now trains on its given label even if it was flagged when the surrogate
  labels were frozen (the original mixes ``0.5`` surrogate + ``0.5`` given for it), so a kept sample's target
  is always its given one-hot;
* only the CE line (RoLT, RoLT-DRW) is offered, not the LDAM head of the original's LDAM configs, and the
  RoLT+ semi-supervised (DivideMix) extension is not part of it;
* features come from the network's own ``fc`` input (every dsink model), or the input of its last
  ``nn.Linear`` (:func:`penultimate`); the original uses a separate feature model and classifier.

Under torchrun every process runs the same feature pass over the whole training set and the same
deterministic fits, so the selection needs no merge. The prediction is the network's softmax.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..models.heads import centred_l2
from ..losses import class_balanced_weights
from .base import Method, feature_pass, register_method
from .dividemix import fit_gmm_1d

log = logging.getLogger(__name__)

# scikit-learn's GaussianMixture defaults, which the original fits on each class's distances
GMM_OPTIONS = {"max_iter": 100, "tol": 1e-3, "reg": 1e-6}
# ||z - p||^2 of a unit vector z to a mean p of unit vectors is at most 4: the distance to an empty class
FAR = 4.0


@dataclass
class RoLTParams:
    """Defaults of the authors' CIFAR recipe (200 epochs; github.com/Stomach-ache/RoLT, ``run_networks.py``
    and the ``feat_uniformdrw`` configs): soft pseudo-labels after 80 warm-up epochs; one refinement of the
    prototypes; a sample is clean when the GMM assigns it to the small-distance component (posterior > 0.5),
    a GMM per class on that class's min-max-normalised distances (``cls_ind`` true, the meaning of the
    original's ``--cls_ind`` flag; false: one GMM over all samples' globally normalised distances, the RoLT+
    default); logits averaged over epochs with ``ema`` 0.6; flagged samples' soft label
    0.4 ERM guess + 0.2 nearest-prototype guess + 0.2 given label + 0.2 uniform; DRW (class-balanced
    weights, beta 0.9999) from epoch 160 of 200 (``drw_start`` 0.8; None: no DRW), with the flagged
    samples' soft label then 0.5 surrogate label + 0.5 uniform (``drw_smoothing``). ``warmup_epochs`` counts
    epochs (not a share of them): with fewer epochs in all the run is plain CE, and a warning says so."""

    warmup_epochs: int = 80
    cls_ind: bool = True
    refine: int = 1
    p_threshold: float = 0.5
    ema: float = 0.6
    erm_weight: float = 0.4
    ncm_weight: float = 0.2
    given_weight: float = 0.2
    drw_start: float | None = 0.8
    beta: float = 0.9999
    drw_smoothing: float = 0.5


def class_means(z: torch.Tensor, labels: torch.Tensor, num_classes: int,
                keep: torch.Tensor | None = None, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Prototypes ``(C, D)``: mean of the rows of ``z`` labelled c (and kept); and which classes have any.

    Sums are one-hot matrix products over fixed chunks of rows, not ``index_add_``, whose atomic float adds
    on CUDA would let torchrun processes disagree in the last bits."""
    w = torch.ones(len(z), device=z.device) if keep is None else keep.float()
    zw = torch.cat([z * w[:, None], w[:, None]], 1)  # the last column counts
    sums = torch.zeros(num_classes, zw.shape[1], device=z.device)
    for rows in torch.arange(len(z), device=z.device).split(chunk):
        sums += F.one_hot(labels[rows], num_classes).float().T @ zw[rows]
    counts = sums[:, -1]
    return sums[:, :-1] / counts.clamp_min(1)[:, None], counts > 0


def sq_distances(z: torch.Tensor, protos: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(N, C)``; classes with no prototype are as far as possible."""
    d = (z.pow(2).sum(1, keepdim=True) + protos.pow(2).sum(1) - 2 * z @ protos.T).clamp_min(0)
    return torch.where(present, d, torch.full_like(d, FAR))


def _minmax(x: torch.Tensor) -> torch.Tensor:
    return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)


def gmm_clean_prob(dist: torch.Tensor, labels: torch.Tensor, num_classes: int, cls_ind: bool) -> torch.Tensor:
    """Posterior (N,) of the small-distance component of 2-component GMMs on each sample's distance to its
    labelled prototype: one GMM per class on min-max-normalised distances (``cls_ind``), or one over all.

    The fits run on the CPU in float64 (1-D, small: faster there than as many small GPU kernels, and
    bit-identical on every process)."""
    d, y = dist.detach().double().cpu(), labels.cpu()
    if not cls_ind:
        return fit_gmm_1d(_minmax(d), **GMM_OPTIONS).to(dist.device)
    prob = torch.ones(len(d), dtype=torch.float32)  # a class of one sample: its own prototype, clean
    for c in range(num_classes):
        rows = (y == c).nonzero().squeeze(1)
        if len(rows) > 1:
            prob[rows] = fit_gmm_1d(_minmax(d[rows]), **GMM_OPTIONS)
    return prob.to(dist.device)


def _keep(prob: torch.Tensor, labels: torch.Tensor, num_classes: int, threshold: float
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``prob > threshold``; a class with nothing above it keeps every sample (probability set to 1)."""
    keep = prob > threshold
    kept = torch.zeros(num_classes, device=prob.device).index_add_(0, labels, keep.float())
    empty = (kept == 0)[labels]
    return keep | empty, torch.where(empty, torch.ones_like(prob), prob)


class Selection(NamedTuple):
    """One epoch's prototype selection: clean probability (N,), kept mask (N,), NCM logits (N, C)."""

    clean: torch.Tensor
    keep: torch.Tensor
    ncm_logits: torch.Tensor


def prototype_selection(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, *, cls_ind: bool = True,
                        refine: int = 1, p_threshold: float = 0.5) -> Selection:
    """RoLT's small-distance rule on features ``(N, D)`` with given ``labels`` (N,): prototypes from all
    samples of a class, then ``refine`` times from the samples kept by the distance GMM."""
    z = centred_l2(feats)
    protos, present = class_means(z, labels, num_classes)
    for it in range(refine + 1):
        dist = sq_distances(z, protos, present)
        prob = gmm_clean_prob(dist.gather(1, labels[:, None]).squeeze(1), labels, num_classes, cls_ind)
        keep, prob = _keep(prob, labels, num_classes, p_threshold)
        if it < refine:
            protos, present = class_means(z, labels, num_classes, keep)
    return Selection(prob, keep, -dist)


def soft_label_components(y: torch.Tensor, keep: torch.Tensor, guesses: list[tuple[torch.Tensor, float]],
                          given_weight: float, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RoLT's soft label as hard-label terms: labels ``(B, K)`` and weights ``(K,)`` summing to 1.

    Terms: each guess (its label for flagged samples), the given label, and one term per class carrying
    ``(1 - sum of the other weights) / C`` (label smoothing); every term is the given label for kept samples.
    """
    c = torch.arange(num_classes, device=y.device)
    cols = [torch.where(keep, y, g) for g, _ in guesses] + [y]
    labels = torch.cat([torch.stack(cols, 1), torch.where(keep[:, None], y[:, None], c[None, :])], 1)
    head = [w for _, w in guesses] + [given_weight]
    rest = max(0.0, 1.0 - sum(head))
    coef = torch.tensor(head + [rest / num_classes] * num_classes, device=y.device)
    return labels, coef


def soft_targets(labels: torch.Tensor, coef: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The soft label ``(B, C)`` that the terms of :func:`soft_label_components` add up to."""
    out = torch.zeros(len(labels), num_classes, device=labels.device)
    return out.scatter_add_(1, labels, coef.expand_as(labels).to(out.dtype))


def component_ce(logits: torch.Tensor, labels: torch.Tensor, coef: torch.Tensor,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_k coef_k CE(logits, labels[:, k]; weight)``, each term a (class-weighted) mean as
    ``F.cross_entropy(weight=...)`` takes it; with no weight it equals the soft CE of :func:`soft_targets`."""
    picked = -F.log_softmax(logits.float(), 1).gather(1, labels)  # (B, K)
    if weight is None:
        per_term = picked.mean(0)
    else:
        w = weight[labels]
        per_term = (w * picked).sum(0) / w.sum(0).clamp_min(1e-12)
    return (coef * per_term).sum()


def _check(p: RoLTParams) -> None:
    weights = (p.erm_weight, p.ncm_weight, p.given_weight)
    ok = (p.warmup_epochs >= 0 and p.refine >= 0 and 0 <= p.p_threshold < 1 and 0 <= p.ema < 1
          and min(weights) >= 0 and sum(weights) <= 1 + 1e-9 and 0 <= p.drw_smoothing <= 1
          and 0 <= p.beta < 1 and (p.drw_start is None or p.drw_start >= 0))
    if not ok:
        raise InputError("rolt needs method.params warmup_epochs >= 0, refine >= 0, 0 <= p_threshold < 1, "
                         "0 <= ema < 1, erm_weight, ncm_weight, given_weight >= 0 with a sum of at most 1, "
                         f"0 <= drw_smoothing <= 1, 0 <= beta < 1 and drw_start >= 0 or null; got {p}")


@register_method
class RoLT(Method):
    """RoLT: prototype-distance GMM noise detection, soft pseudo-labels for flagged samples, deferred
    class-balanced re-weighting; one network, the saved prediction is its softmax."""

    name = "rolt"
    role = "noise"
    description = "RoLT (Wei et al. 2021): prototype-distance GMM selection, soft pseudo-labels, DRW"
    Params = RoLTParams

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        _check(params)
        if params.warmup_epochs >= ctx.epochs:
            start = None if params.drw_start is None else int(params.drw_start * ctx.epochs)
            drw = f" (with class-balanced re-weighting from epoch {start + 1})" if start is not None and start < ctx.epochs else ""
            log.warning("rolt: warmup_epochs=%d >= %d epochs: no selection is made, the run is CE%s; set "
                        "method.params.warmup_epochs below optim.epochs", params.warmup_epochs, ctx.epochs, drw)
        self.ema_erm: torch.Tensor | None = None  # moving averages of the ERM and NCM logits (N, C)
        self.ema_ncm: torch.Tensor | None = None
        self.clean: torch.Tensor | None = None  # latest clean probability (N,)
        self.keep: torch.Tensor | None = None  # latest kept mask (N,)
        self.guess_erm: torch.Tensor | None = None  # latest guessed labels (N,)
        self.guess_ncm: torch.Tensor | None = None
        self.surrogate: torch.Tensor | None = None  # labels frozen at the first DRW selection (N,)
        self.given: torch.Tensor | None = None  # the given (noisy) training labels (N,)
        self._weights: tuple[int, torch.Tensor | None] = (-1, None)  # (epoch, class weights) of the last step

    @property
    def drw_epoch(self) -> int | None:
        """First (0-based) epoch of deferred re-weighting, None without DRW."""
        return None if self.p.drw_start is None else int(self.p.drw_start * self.ctx.epochs)

    def _in_drw(self, epoch: int) -> bool:
        return self.drw_epoch is not None and epoch >= self.drw_epoch

    def _average(self, erm: torch.Tensor, ncm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Update the moving averages of the ERM and NCM logits (the first epoch's values start them)."""
        a = self.p.ema
        if self.ema_erm is None:
            self.ema_erm, self.ema_ncm = erm, ncm
        else:
            self.ema_erm = a * self.ema_erm + (1 - a) * erm
            self.ema_ncm = a * self.ema_ncm + (1 - a) * ncm
        return self.ema_erm, self.ema_ncm

    def on_epoch_start(self, epoch, trainer):
        if epoch < self.p.warmup_epochs:
            return {}
        y = trainer.train_y
        feats, logits = feature_pass(trainer.models["net"], trainer)
        sel = prototype_selection(feats, y, self.ctx.num_classes, cls_ind=self.p.cls_ind, refine=self.p.refine,
                                  p_threshold=self.p.p_threshold)
        erm, ncm = self._average(logits, sel.ncm_logits)
        self.clean, self.keep, self.given = sel.clean, sel.keep, y
        self.guess_erm, self.guess_ncm = erm.argmax(1), ncm.argmax(1)
        if self._in_drw(epoch) and self.surrogate is None:
            self.surrogate = torch.where(self.keep, y, self.guess_erm)
            self._weights = (-1, None)  # the weights now follow the surrogate labels
        return {"rolt_kept": float(self.keep.float().mean()),
                "rolt_relabelled": float((self.trained_labels(y) != y).float().mean())}

    def trained_labels(self, y: torch.Tensor) -> torch.Tensor:
        """The hard label each training sample is trained towards: the given one if kept, else the
        surrogate label (DRW phase) or the ERM guess."""
        guess = self.surrogate if self.surrogate is not None else self.guess_erm
        return torch.where(self.keep, y, guess)

    def class_weights(self, epoch: int) -> torch.Tensor | None:
        """Class-balanced weights (C,) in the DRW phase, from the surrogate labels once frozen (else the
        given labels); None before it. Computed once an epoch (it reads the labels back from the device)."""
        if self._weights[0] == epoch:
            return self._weights[1]
        w = None
        if self._in_drw(epoch):
            counts = (np.bincount(self.surrogate.cpu().numpy(), minlength=self.ctx.num_classes)
                      if self.surrogate is not None else self.ctx.class_counts)
            w = class_balanced_weights(counts, self.p.beta).to(self.ctx.device)
        self._weights = (epoch, w)
        return w

    def targets(self, y: torch.Tensor, idx: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft-label terms ``(labels (B, K), weights (K,))`` of the batch's samples ``idx`` (after warm-up)."""
        keep = self.keep[idx]
        if self._in_drw(epoch) and self.surrogate is not None:
            return soft_label_components(y, keep, [(self.surrogate[idx], 1 - self.p.drw_smoothing)], 0.0,
                                         self.ctx.num_classes)
        guesses = [(self.guess_erm[idx], self.p.erm_weight), (self.guess_ncm[idx], self.p.ncm_weight)]
        return soft_label_components(y, keep, guesses, self.p.given_weight, self.ctx.num_classes)

    def training_step(self, models, x, y, idx, epoch):
        logits = models["net"](x)
        weight = self.class_weights(epoch)
        if epoch < self.p.warmup_epochs or self.keep is None:
            return {"loss": F.cross_entropy(logits.float(), y, weight=weight), "logits": logits}
        labels, coef = self.targets(y, idx, epoch)
        loss = component_ce(logits, labels, coef, weight)
        return {"loss": loss, "logits": logits, "kept_frac": self.keep[idx].float().mean()}

    def sample_selection(self):
        if self.keep is None:
            return None
        return {"clean": self.clean.float().cpu().numpy(),
                "label": self.trained_labels(self.given).long().cpu().numpy()}

    _STATE = ("ema_erm", "ema_ncm", "clean", "keep", "guess_erm", "guess_ncm", "surrogate", "given")

    def state_dict(self):
        return {k: getattr(self, k) for k in self._STATE}

    def load_state_dict(self, state):
        for k in self._STATE:
            v = state.get(k)
            setattr(self, k, v.to(self.ctx.device) if torch.is_tensor(v) else None)
