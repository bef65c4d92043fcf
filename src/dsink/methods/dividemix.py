"""DivideMix (Li, Socher & Hoi, ICLR 2020): two networks, per-sample loss mixture split, MixMatch.

How it runs inside the one training loop (the original alternates whole epochs of net 1 and net 2 over
separate labelled and unlabelled loaders):

* warm-up epochs: both networks are trained with CE on the noisy labels (plus, optionally, the
  confidence penalty the original uses for asymmetric noise);
* at the start of every later epoch each network's per-sample CE on the un-augmented training set is
  normalised to [0, 1] and a two-component 1-D Gaussian mixture is fitted to it (EM, as the original's
  ``GaussianMixture(2, max_iter=10, tol=1e-2, reg_covar=5e-4)``); ``w_i`` = posterior of the
  small-mean component is the probability that sample i is clean;
* every batch then trains each network on its *peer's* division: samples with the peer's
  ``w_i > p_threshold`` are labelled, the rest unlabelled. Two augmented views per sample;
  labelled targets are refined (``w y + (1 - w) p``), unlabelled targets co-guessed by both networks
  on both views, both sharpened with temperature ``T``; MixMatch mixup with ``lam ~ Beta(alpha, alpha)``,
  ``lam = max(lam, 1 - lam)``; loss = soft CE (labelled) + ``lambda_u`` x ramp x MSE (unlabelled)
  + the uniform-prior regulariser ``sum_c pi_c log(pi_c / mean p_c)``.

The division per batch instead of per loader keeps one loop and the same per-epoch cost; every sample is
still seen once per epoch by each network. The saved prediction averages the two networks' softmax.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InputError
from .base import Method, register_method
from .noise import average_logits

log = logging.getLogger(__name__)


@dataclass
class DivideMixParams:
    """Defaults of the original's CIFAR recipe: p_threshold 0.5, T 0.5, alpha 4, lambda_u 25 (CIFAR-10
    at 50 % or more symmetric noise; the paper uses 0 at 20 %, 150 for CIFAR-100 at 80-90 %), warm-up
    10 epochs (CIFAR-10; 30 for CIFAR-100), lambda_u ramped up over 16 epochs, confidence penalty for
    asymmetric noise only."""

    warmup_epochs: int = 10
    p_threshold: float = 0.5
    temperature: float = 0.5
    alpha: float = 4.0
    lambda_u: float = 25.0
    rampup_epochs: int = 16
    warmup_penalty: bool = False


def fit_gmm_1d(x: torch.Tensor, *, max_iter: int = 10, tol: float = 1e-2, reg: float = 5e-4) -> torch.Tensor:
    """Posterior of the smaller-mean component of a two-component 1-D Gaussian mixture fitted by EM.

    ``x`` (N,) float; initialised with the components at the lower and upper thirds; ``reg`` is added
    to each variance; stops when the mean log-likelihood improves by less than ``tol``. Returns (N,).
    """
    x = x.double()
    if len(x) < 2 or float(x.max() - x.min()) <= 0:
        return torch.full_like(x, 0.5).float()
    q = torch.quantile(x, torch.tensor([1 / 3, 2 / 3], dtype=x.dtype, device=x.device))
    mu = q.clone()
    var = torch.full((2,), float(x.var()) / 4 + reg, dtype=x.dtype, device=x.device)
    pi = torch.full((2,), 0.5, dtype=x.dtype, device=x.device)
    prev = -math.inf
    for _ in range(max_iter):
        logp = -0.5 * ((x[:, None] - mu) ** 2 / var + torch.log(2 * math.pi * var)) + pi.log()
        ll = torch.logsumexp(logp, 1)
        r = (logp - ll[:, None]).exp()  # responsibilities (N, 2)
        nk = r.sum(0).clamp_min(1e-12)
        pi = nk / len(x)
        mu = (r * x[:, None]).sum(0) / nk
        var = (r * (x[:, None] - mu) ** 2).sum(0) / nk + reg
        cur = float(ll.mean())
        if cur - prev < tol:
            break
        prev = cur
    logp = -0.5 * ((x[:, None] - mu) ** 2 / var + torch.log(2 * math.pi * var)) + pi.log()
    post = (logp - torch.logsumexp(logp, 1, keepdim=True)).exp()
    return post[:, int(mu.argmin())].float()


def _sharpen(p: torch.Tensor, t: float) -> torch.Tensor:
    p = p.pow(1.0 / t)
    return p / p.sum(1, keepdim=True)


def semi_losses(logits: torch.Tensor, target: torch.Tensor, is_lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MixMatch's soft CE over the labelled rows and MSE of the softmax over the unlabelled rows (0 if none)."""
    n_l = int(is_lab.sum())
    zero = logits.sum() * 0
    lx = -(target[is_lab] * logits[is_lab].log_softmax(1)).sum(1).mean() if n_l else zero
    lu = ((logits[~is_lab].softmax(1) - target[~is_lab]) ** 2).mean() if n_l < len(is_lab) else zero
    return lx, lu


def uniform_prior_penalty(logits: torch.Tensor) -> torch.Tensor:
    """DivideMix's regulariser ``sum_c pi_c log(pi_c / mean p_c)`` with the uniform prior ``pi``."""
    mean_p = logits.softmax(1).mean(0)
    prior = torch.full_like(mean_p, 1.0 / len(mean_p))
    return (prior * (prior / mean_p.clamp_min(1e-12)).log()).sum()


@register_method
class DivideMix(Method):
    """DivideMix: co-divide by a loss GMM, MixMatch on the labelled/unlabelled split; two networks."""

    name = "dividemix"
    role = "noise"
    description = "DivideMix (Li et al. 2020): loss-GMM co-divide + MixMatch, two networks"
    Params = DivideMixParams
    views = 2

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        p = params
        if not (p.alpha > 0 and p.temperature > 0 and 0 <= p.p_threshold <= 1 and p.warmup_epochs >= 0
                and p.rampup_epochs >= 0):
            raise InputError(f"{self.name} needs method.params alpha > 0, temperature > 0, 0 <= p_threshold <= 1, "
                             f"warmup_epochs >= 0 and rampup_epochs >= 0; got {p}")
        if p.warmup_epochs >= ctx.epochs:
            log.warning("%s: warmup_epochs=%d >= %d epochs: the networks never leave the warm-up (no division); "
                        "set method.params.warmup_epochs below optim.epochs", self.name, p.warmup_epochs, ctx.epochs)
        self.clean_prob: dict[str, torch.Tensor] = {}
        self._given: torch.Tensor | None = None  # the training labels, kept at the first division
        self.gen = torch.Generator().manual_seed(10_007 * ctx.seed + 1)
        self._iters_seen = 0

    def build_models(self, make_model):
        return {"net": make_model(), "peer": make_model()}

    @torch.no_grad()
    def _per_sample_loss(self, net, trainer) -> torch.Tensor:
        net.eval()
        out = []
        try:
            for idx, raw in trainer.batches("train"):
                logits = net(trainer.pipeline(raw)).float()
                out.append(F.cross_entropy(logits, trainer.train_y[idx], reduction="none"))
        finally:
            net.train()
        return torch.cat(out)

    def clean_probability(self, key: str, net, trainer) -> tuple[torch.Tensor, dict[str, float]]:
        """Network ``key``'s probability (N,) that each training label is clean, and scalars to log: the
        posterior of the low-loss component of a GMM on its normalised per-sample CE (subclasses divide
        otherwise)."""
        loss = self._per_sample_loss(net, trainer)
        loss = (loss - loss.min()) / (loss.max() - loss.min()).clamp_min(1e-12)
        return fit_gmm_1d(loss), {}

    def on_epoch_start(self, epoch, trainer):
        if epoch < self.p.warmup_epochs:
            self.clean_prob = {}
            return {}
        row = {}
        for k, net in trainer.models.items():
            clean, logs = self.clean_probability(k, net, trainer)
            self.clean_prob[k] = clean.to(trainer.device)
            row[f"labelled_{k}"] = float((self.clean_prob[k] > self.p.p_threshold).float().mean())
            row.update(logs)
        self._given = trainer.train_y
        return row

    def sample_selection(self):
        """The mean of the two networks' clean probabilities; the given label where the mean exceeds
        ``p_threshold``, -1 (unlabelled) elsewhere."""
        if not self.clean_prob or self._given is None:
            return None
        clean = torch.stack(list(self.clean_prob.values())).mean(0)
        label = torch.where(clean > self.p.p_threshold, self._given, torch.full_like(self._given, -1))
        return {"clean": clean, "label": label}

    def training_step(self, models, x, y, idx, epoch):
        x1, x2 = x
        if epoch < self.p.warmup_epochs:
            loss, first = 0.0, None
            for net in models.values():
                logits = net(x1).float()
                first = logits if first is None else first
                loss = loss + F.cross_entropy(logits, y)
                if self.p.warmup_penalty:  # negative-entropy penalty: discourages over-confidence
                    p = logits.softmax(1)
                    loss = loss + (p * p.clamp_min(1e-12).log()).sum(1).mean()
            return {"loss": loss, "logits": first}
        return self._mixmatch_step(models, x1, x2, y, idx, epoch)

    def _guesses(self, nets, x1, x2) -> tuple[dict, torch.Tensor]:
        """Each network's softmax on both views, and the sharpened co-guess of all of them (no gradient)."""
        with torch.no_grad():
            probs = {k: (net(x1).float().softmax(1), net(x2).float().softmax(1)) for k, net in nets}
            guess_u = _sharpen(sum(p1 + p2 for p1, p2 in probs.values()) / (2 * len(nets)), self.p.temperature)
        return probs, guess_u

    def _ramp(self, epoch: int) -> float:
        """lambda_u's linear ramp-up after the warm-up, in [0, 1]."""
        return min(1.0, max(0.0, epoch - self.p.warmup_epochs) / max(self.p.rampup_epochs, 1))

    def _mixed_batch(self, own_probs, w, onehot, guess_u, x1, x2):
        """MixMatch's mixed inputs and targets for one network from its peer's clean probabilities ``w`` of the
        batch: refined labelled targets, co-guessed unlabelled ones, mixup with ``lam = max(lam, 1 - lam)``.
        Returns ``(mixed inputs, mixed targets, labelled mask of the mixed rows, labelled mask of the batch)``."""
        lab = w > self.p.p_threshold
        with torch.no_grad():
            p1, p2 = own_probs
            refined = _sharpen(w[:, None] * onehot + (1 - w[:, None]) * (p1 + p2) / 2, self.p.temperature)
            target = torch.where(lab[:, None], refined, guess_u)
            lam = self._beta()
            lam = max(lam, 1 - lam)
        inputs, targets, is_lab = torch.cat([x1, x2]), torch.cat([target, target]), torch.cat([lab, lab])
        perm = torch.randperm(len(inputs), generator=self.gen).to(inputs.device)
        return lam * inputs + (1 - lam) * inputs[perm], lam * targets + (1 - lam) * targets[perm], is_lab, lab

    def _mixmatch_step(self, models, x1, x2, y, idx, epoch):
        nets = list(models.items())
        probs, guess_u = self._guesses(nets, x1, x2)
        onehot = F.one_hot(y, self.ctx.num_classes).float()
        total, logs = 0.0, {}
        for i, (k, net) in enumerate(nets):
            w = self.clean_prob[nets[1 - i][0]][idx]  # the peer's division
            mixed_x, mixed_t, is_lab, lab = self._mixed_batch(probs[k], w, onehot, guess_u, x1, x2)
            logits = net(mixed_x).float()
            lx, lu = semi_losses(logits, mixed_t, is_lab)
            total = total + lx + self.p.lambda_u * self._ramp(epoch) * lu + uniform_prior_penalty(logits)
            logs[f"lx_{k}"] = lx.detach()
            logs[f"lu_{k}"] = lu.detach()
            logs[f"labelled_frac_{k}"] = lab.float().mean()
        # Training accuracy on the noisy labels is logged from the first network's clean first view.
        return {"loss": total, "logits": probs[nets[0][0]][0].log(), **logs}

    def _gamma(self, a: float) -> float:
        """A Gamma(a, 1) draw from the method's own generator (Marsaglia & Tsang 2000)."""
        if a < 1:
            u = float(torch.rand((), generator=self.gen, dtype=torch.float64))
            return self._gamma(a + 1) * u ** (1 / a)
        d = a - 1 / 3
        c = 1 / math.sqrt(9 * d)
        while True:
            z = float(torch.randn((), generator=self.gen, dtype=torch.float64))
            v = (1 + c * z) ** 3
            if v <= 0:
                continue
            u = float(torch.rand((), generator=self.gen, dtype=torch.float64))
            if math.log(max(u, 1e-300)) < 0.5 * z * z + d - d * v + d * math.log(v):
                return d * v

    def _beta(self) -> float:
        """A Beta(alpha, alpha) draw: G1 / (G1 + G2) with G1, G2 ~ Gamma(alpha)."""
        g1, g2 = self._gamma(self.p.alpha), self._gamma(self.p.alpha)
        return g1 / (g1 + g2)

    def predict_logits(self, models, x):
        return average_logits(models, x)

    def state_dict(self):
        return {"generator": self.gen.get_state()}

    def load_state_dict(self, state):
        if "generator" in state:
            self.gen.set_state(state["generator"])
