"""TABASCO (Lu, Zhang, Han, Cheung & Wang, "Label-Noise Learning with Intrinsically Long-Tailed Data", ICCV 2023).

Two-stage bi-dimensional sample selection for noisy labels on intrinsically long-tailed data: DivideMix's
two co-trained networks and MixMatch step, with the loss-GMM co-division replaced by a per-class choice
between two separation metrics.

* Metric 1, weighted Jensen-Shannon divergence (WJSD) between a sample's prediction ``p`` and its one-hot
  given label ``y``: ``w * JS(p, e_y)`` (equal mixture weights, natural log) with
  ``w = clip(max_j p_j / p_y, 1, max_j pbar_j / pbar_y)``, ``pbar`` the mean prediction over the samples
  labelled ``y``. A sample whose prediction disagrees with its label is weighted up, by at most how much
  its class as a whole disagrees with it (no weighting for a class whose mean prediction is its label).
* Metric 2, adaptive centroid distance (ACD): penultimate features are centred on the training-set mean
  and L2-normalised; the centroid of class ``c`` is the normalised mean of the class's *confidently clean*
  samples, those predicted as ``c`` with ``p_c`` above the adaptive threshold ``mean(q * max(1, q / mean q))``
  over the class's ``q = p_c`` (its mean confidence, with above-average confidences weighted up by their
  ratio to the mean); all the class's samples when none qualifies. ACD = cosine distance to that centroid.
* Per class, each metric is min-max normalised within the class and a two-component 1-D GMM is fitted to
  it (:func:`dsink.methods.dividemix.fit_gmm_1d`, ``max_iter=30`` as the published code); the class uses
  the metric whose two components lie further apart relative to their spread (Ashman's D,
  ``|mu_1 - mu_2| / sqrt((s_1^2 + s_2^2) / 2)``; ties: WJSD). Its small-mean posterior is the clean
  probability; samples above ``p_threshold`` are labelled, the others unlabelled, and MixMatch runs as in
  :class:`~dsink.methods.dividemix.DivideMix` (co-divided: each network trains on its peer's division).

Where ours differs from the paper and its public code, and why:

* One training loop, as our DivideMix: the division is computed at the start of every epoch after the
  warm-up and applied per batch (a sample labelled by the peer's division is in the labelled part of its
  batch), instead of separate labelled and unlabelled loaders trained one network after the other.
* The metric choice. The public code keeps ACD unless a cross-check says otherwise (the two ACD clusters'
  mean WJSD both fall in the high-WJSD GMM component, or the ratio of the WJSD spreads of the clusters
  mapped to the high and low components is below 0.65), and for an ACD class whose centroid lies within
  10 % of a larger class's centroid takes the *far* cluster as clean. That rule chooses ACD for a class
  whose ACD clusters both look clean in WJSD even when ACD carries no signal; we choose by the separation
  of each metric's own fitted GMM, which picks the metric with a clear two-cluster structure.
* The adaptive centroid's target class is the given label, not (as the public code) the argmax of the
  class's boosted mean prediction: a class overrun by noise from a head class then still centres on the
  samples predicted as itself, so the near cluster is the clean one without the far-cluster exception.
* Features are the input of the model's final layer (``fc``), taken by a forward hook, for any model of
  :func:`dsink.models.build_model`; the GMM's component statistics are read from its final posteriors.

The division is deterministic (no random draws; per-class masked reductions), so every torchrun process
computes the same one from the same weights and nothing is merged; it is recomputed from the networks at
the start of each epoch, so a resumed run needs only the MixMatch generator from the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models.heads import centred_l2
from .base import feature_pass, register_method
from .dividemix import DivideMix, DivideMixParams, fit_gmm_1d

GMM_MAX_ITER = 30  # the published code's GaussianMixture(max_iter=30, tol=1e-2, reg_covar=5e-4)
GMM_REG = 5e-4


@dataclass
class TabascoParams(DivideMixParams):
    """The same fields and values as DivideMix's CIFAR defaults (a test pins them). Defaults of the authors' published CIFAR recipe (github.com/Wakings/TABASCO, ``settings/configs.py``
    and ``experiment/train_cifar_ssl.py``): p_threshold 0.5, temperature T 0.5, MixMatch alpha 4, lambda_u 25
    ramped up linearly over 16 epochs after the warm-up, warm-up 10 epochs (CIFAR-10; 30 for CIFAR-100).
    The warm-up is plain CE on both networks: the published code defines DivideMix's confidence penalty
    (for asymmetric noise) but does not apply it, hence ``warmup_penalty`` off."""


@dataclass
class Division:
    """One network's TABASCO division of the training set.

    ``clean`` (N,) float: probability that each sample's given label is clean; ``uses_acd`` (C,) bool: the
    classes divided by the centroid distance (the others by WJSD; a class without samples: False);
    ``separation`` (C, 2) float: Ashman's D of the WJSD and ACD mixtures of each class."""

    clean: torch.Tensor
    uses_acd: torch.Tensor
    separation: torch.Tensor


def _kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise KL(a || b) in nats, with ``0 log 0 = 0``."""
    return (torch.special.xlogy(a, a) - torch.special.xlogy(a, b)).sum(1)


def js_to_label(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (nats, equal weights) between each row of ``probs`` (N, C) and the one-hot
    of its label (N,): ``(KL(p || m) + KL(e_y || m)) / 2`` with ``m = (p + e_y) / 2``; in [0, log 2]."""
    onehot = F.one_hot(labels, probs.shape[1]).to(probs.dtype)
    m = (probs + onehot) / 2
    return (_kl(probs, m) + _kl(onehot, m)) / 2


def class_mean_probs(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C): row ``c`` is the mean prediction over the samples labelled ``c`` (zeros for an empty class)."""
    rows = [probs[labels == c].mean(0) if bool((labels == c).any()) else probs.new_zeros(probs.shape[1])
            for c in range(num_classes)]
    return torch.stack(rows)


def weighted_js(probs: torch.Tensor, labels: torch.Tensor, class_mean: torch.Tensor) -> torch.Tensor:
    """TABASCO's weighted JS divergence (N,): ``w_i * JS(p_i, e_{y_i})`` with
    ``w_i = clip(max_j p_ij / p_iy, 1, max_j pbar_yj / pbar_yy)``, ``pbar_y = class_mean[y]`` (C, C) the mean
    prediction of the samples labelled ``y`` (:func:`class_mean_probs`)."""
    p_y = probs.gather(1, labels[:, None]).squeeze(1)
    pbar = class_mean[labels]
    cap = pbar.max(1).values / pbar.gather(1, labels[:, None]).squeeze(1).clamp_min(1e-12)
    ratio = probs.max(1).values / p_y.clamp_min(1e-12)
    weight = torch.minimum(ratio, cap.clamp_min(1.0)).clamp_min(1.0)
    return weight * js_to_label(probs, labels)


def adaptive_centroids(z: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, D) unit centroids of the centred, normalised features ``z`` (N, D): class ``c``'s is the mean of
    its confidently clean samples (predicted ``c`` with ``q = p_c`` above ``mean(q * max(1, q / mean q))``
    over the class), or of all its samples when none is; zeros for an empty class."""
    out = z.new_zeros(num_classes, z.shape[1])
    for c in range(num_classes):
        rows = labels == c
        if not bool(rows.any()):
            continue
        q = probs[rows, c]
        threshold = (q * (q / q.mean().clamp_min(1e-12)).clamp_min(1.0)).mean()
        confident = (probs[rows].argmax(1) == c) & (q > threshold)
        zc = z[rows]
        out[c] = F.normalize((zc[confident] if bool(confident.any()) else zc).mean(0), dim=0)
    return out


def centroid_distance(feats: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """TABASCO's adaptive centroid distance (N,): cosine distance of each sample's feature, centred on the
    mean feature and normalised, to its class's :func:`adaptive_centroids`; in [0, 2]."""
    z = centred_l2(feats)
    return 1 - (z * adaptive_centroids(z, probs, labels, num_classes)[labels]).sum(1)


def ashman_d(x: torch.Tensor, clean_post: torch.Tensor) -> float:
    """Ashman's D ``|mu_1 - mu_2| / sqrt((s_1^2 + s_2^2) / 2)`` of the two mixture components of ``x`` (N,),
    their means and variances read from the posterior ``clean_post`` (N,) of one of them (and
    ``1 - clean_post`` of the other), each variance regularised as in the GMM fit; 0 for a degenerate split."""
    r = torch.stack([clean_post, 1 - clean_post]).double()
    x = x.double()
    nk = r.sum(1).clamp_min(1e-12)
    mu = (r * x).sum(1) / nk
    var = (r * (x - mu[:, None]) ** 2).sum(1) / nk + GMM_REG
    return float((mu[0] - mu[1]).abs() / (var.sum() / 2).sqrt())


def _minmax(x: torch.Tensor) -> torch.Tensor:
    return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)


def divide(probs: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Division:
    """TABASCO's bi-dimensional division of a training set from one network's softmax ``probs`` (N, C) and
    penultimate features ``feats`` (N, D) for the given ``labels`` (N,): per class, a GMM on each min-max
    normalised metric, the better separated one (:func:`ashman_d`) gives the clean probability."""
    metrics = (weighted_js(probs, labels, class_mean_probs(probs, labels, num_classes)),
               centroid_distance(feats, probs, labels, num_classes))
    clean = probs.new_full((len(labels),), 0.5)
    uses_acd = torch.zeros(num_classes, dtype=torch.bool)
    separation = torch.zeros(num_classes, 2, dtype=torch.float64)
    for c in range(num_classes):
        rows = (labels == c).nonzero().squeeze(1)
        if len(rows) == 0:
            continue
        fits = []
        for k, metric in enumerate(metrics):
            x = _minmax(metric[rows])
            post = fit_gmm_1d(x, max_iter=GMM_MAX_ITER, reg=GMM_REG)
            separation[c, k] = ashman_d(x, post)
            fits.append(post)
        uses_acd[c] = bool(separation[c, 1] > separation[c, 0])
        clean[rows] = fits[int(uses_acd[c])].to(clean.dtype)
    return Division(clean, uses_acd, separation)


@register_method
class Tabasco(DivideMix):
    """TABASCO: per-class choice of WJSD or adaptive centroid distance for the co-division, then DivideMix's
    MixMatch step; two networks."""

    name = "tabasco"
    role = "noise"
    description = ("TABASCO (Lu et al., ICCV 2023): per-class bi-dimensional (weighted JS / adaptive centroid "
                   "distance) co-divide + MixMatch, two networks")
    Params = TabascoParams

    def clean_probability(self, key, net, trainer):
        """The per-class bi-dimensional division of ``net``'s outputs (:func:`divide`); logs the share of
        classes divided by the centroid distance."""
        feats, logits = feature_pass(net, trainer)
        probs = logits.softmax(1)
        div = divide(probs, feats, trainer.train_y, self.ctx.num_classes)
        return div.clean, {f"acd_classes_{key}": float(div.uses_acd.float().mean())}
