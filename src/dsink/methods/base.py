"""The method registry: every training method is a :class:`Method` plugged into the one loop.

A method says which networks it trains (``build_models``), what one optimisation step
computes (``training_step`` returns a dict with ``loss`` and any scalars to log), how its
saved prediction is formed (``predict_logits``) and what it does between epochs.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Protocol

import numpy as np
import torch
import torch.nn as nn

from ..config import MethodConfig, build_dataclass
from ..models.heads import penultimate
from ..registry import Registry

ROLES = ("baseline", "imbalance", "noise", "combined", "target")


class TrainerView(Protocol):
    """What a method's epoch hooks may use of the training engine (:class:`dsink.train.Trainer` is one)."""

    device: torch.device
    models: dict[str, nn.Module]  # the method's networks (bare, never the distributed wrappers)
    train_y: torch.Tensor  # the noisy training labels, on ``device``
    eval_batch_size: int

    def pipeline(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise raw inputs as for prediction (no augmentation)."""

    def batches(self, split: str, rows: torch.Tensor | None = None,
                batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(row indices, raw inputs)`` on ``device`` of a split's rows (all, in order, by default), a batch at a
        time, from the data's backend (in memory or streamed); pass the raw inputs through ``pipeline``."""

    def predict_logits(self, split: str = "test", rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the method's prediction for a split (``train``, ``val``, ``test``), or for its ``rows``."""


@torch.no_grad()
def feature_pass(net: nn.Module, trainer: TrainerView) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (N, D) and logits (N, C), float32, of ``net`` over the whole un-augmented training
    set in order, in eval mode (its mode restored after): what the feature-space selections read."""
    was = net.training
    net.eval()
    feats, logits = [], []
    try:
        for _, raw in trainer.batches("train"):
            f, out = penultimate(net, trainer.pipeline(raw))
            feats.append(f.float())
            logits.append(out.float())
    finally:
        net.train(was)
    return torch.cat(feats), torch.cat(logits)


@dataclass
class MethodContext:
    """Facts about the training set a method may use (never the true labels)."""

    num_classes: int
    class_counts: np.ndarray  # noisy-label histogram of the training split
    num_train: int
    epochs: int
    device: torch.device
    noise_rate: float  # configured noise rate (co-teaching's forget rate default)
    fingerprint: str = ""  # data fingerprint: auxiliary runs must share it
    seed: int = 0  # training seed, for methods that draw their own random numbers
    labels: np.ndarray | None = None  # the noisy training labels (N,), as given
    # The inputs a method declares (Method.auxiliaries, Method.init_from), resolved by the caller
    # (dsink.train.inputs): methods never read other runs themselves.
    aux_probs: dict[str, np.ndarray] | None = None  # training-set probabilities (N, C) of each auxiliary, by role
    aux_scores: dict[str, float] | None = None  # each auxiliary's class-balanced noisy-validation accuracy, by role
    # state dict to start the first network from, or a function returning it (read only if the method uses it);
    # None when the weights come from a checkpoint (resume, evaluation)
    init_weights: dict[str, torch.Tensor] | Callable[[], dict[str, torch.Tensor]] | None = None


@dataclass
class NoParams:
    """This method has no parameters."""


class Method:
    """Base class; subclasses set ``name``, ``role``, ``description`` and ``Params``."""

    name: ClassVar[str] = ""
    role: ClassVar[str] = "baseline"
    description: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    views: ClassVar[int] = 1  # augmented views per batch: >1 makes ``x`` a list of that many views
    # role of each auxiliary run the method distils -> the Params field naming its run directory
    auxiliaries: ClassVar[dict[str, str]] = {}

    def __init__(self, params: Any, ctx: MethodContext):
        self.p = params
        self.ctx = ctx
        # factor on every parameter group's learning rate, read when the optimiser is built (after build_models):
        # a method that starts from trained weights may ask for a fine-tuning rate
        self.lr_scale = 1.0

    @functools.cached_property
    def log_prior(self) -> torch.Tensor:
        """``log(n_c / n)`` of the noisy training labels (C,), on the training device."""
        from ..losses import log_prior

        return log_prior(self.ctx.class_counts, self.ctx.device)

    @classmethod
    def expand_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """The params as given, with what a named preset implies filled in beneath them (none by default)."""
        return params

    @classmethod
    def init_from(cls, params: Any) -> str | None:
        """Role of the auxiliary run whose weights start the first network (``ctx.init_weights``); None: a fresh
        initialisation."""
        return None

    def build_models(self, make_model: Callable[[], nn.Module]) -> dict[str, nn.Module]:
        """The networks to train, by name (one by default)."""
        return {"net": make_model()}

    def on_epoch_start(self, epoch: int, trainer: TrainerView) -> dict[str, float]:
        """Hook before each epoch; returns scalars to log."""
        return {}

    def on_epoch_end(self, epoch: int, trainer: TrainerView) -> None:
        """Hook after each epoch's steps (e.g. to merge per-sample state across processes)."""

    def sample_indices(self, epoch: int, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
        """The training-set indices of one epoch, in order (CPU, length = number of training samples),
        drawn with ``gen`` from the noisy ``labels``; None means a uniform random permutation."""
        return None

    def training_step(self, models: dict[str, nn.Module], x, y: torch.Tensor,
                      idx: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """One batch (``x`` is a list of ``views`` augmentations when ``views > 1``):
        returns ``{"loss": scalar tensor, ...}``."""
        raise NotImplementedError

    def predict_logits(self, models: dict[str, nn.Module], x: torch.Tensor) -> torch.Tensor:
        """Logits of the method's saved prediction (two-network methods average)."""
        return models["net"](x)

    def label_log_prior(self) -> torch.Tensor | None:
        """What to add to the prediction's logits to predict the label of a *training* sample: for a method
        whose prediction is the balanced posterior (logit-adjusted training), the log of the training
        prior it divided out; None for a method whose prediction already follows the training distribution.
        The label-correction rate and the label audit use it; the saved probabilities stay as predicted."""
        return None

    def sample_selection(self) -> dict[str, np.ndarray] | None:
        """The method's latest per-sample decision on the training set, by training position (the order of
        ``trainer.train_y``), saved with the run for the audit and the plots: ``clean`` (float32 (N,), the
        probability, or a 0/1 indicator, that the sample's given label is kept as clean) and optionally
        ``label`` (int64 (N,), the label the sample is trained with: the given one, a corrected pseudo-label,
        or -1 where it is used without a label). None (the default): the method selects nothing."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Method state to checkpoint (beyond model and optimiser)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


METHOD_REGISTRY: Registry[type[Method]] = Registry("method")


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to the registry under ``cls.name`` (with its role and description)."""
    if not cls.name or cls.role not in ROLES:
        raise ValueError(f"method {cls.__name__} needs a name and a role in {ROLES}")
    return METHOD_REGISTRY.register(cls.name, cls, role=cls.role, description=cls.description)


def list_methods(filter: str | None = None, role: str | None = None) -> list[str]:
    """Names of the registered methods, sorted; ``filter``: a shell-style pattern, ``role``: one of ``ROLES``."""
    return METHOD_REGISTRY.list(filter, **({} if role is None else {"role": role}))


def get_method(name: str) -> type[Method]:
    """The registered method class ``name``; an unknown name is an InputError listing the valid ones."""
    return METHOD_REGISTRY.get(name)


def method_info(name: str) -> dict[str, Any]:
    """``name``, ``role`` and ``description`` of a registered method."""
    return METHOD_REGISTRY.info(name)


def method_params(cfg: MethodConfig) -> Any:
    """``cfg.params`` (a preset expanded, :meth:`Method.expand_params`) validated into the method's ``Params``."""
    cls = get_method(cfg.name)
    return build_dataclass(cls.Params, cls.expand_params(dict(cfg.params)), "method.params.")


def build_method(cfg: MethodConfig, ctx: MethodContext) -> Method:
    """Instantiate a registered method, validating ``cfg.params`` against its ``Params`` dataclass.

    ``ctx`` carries the inputs the method declares (see :mod:`dsink.train.inputs`, which resolves them)."""
    return get_method(cfg.name)(method_params(cfg), ctx)


def method_params_dict(name: str, params: dict) -> dict:
    """Method params with defaults filled in (for the stored config)."""
    cls = get_method(name)
    return dataclasses.asdict(build_dataclass(cls.Params, cls.expand_params(dict(params)), "method.params."))
