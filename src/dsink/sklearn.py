"""``DSinkClassifier``: D-SINK as a scikit-learn estimator (``pip install dsink[sklearn]``).

``fit(X, y)`` runs the library's own training on the given features, in process: it writes ``X`` and ``y`` to an
``.npz`` in a temporary folder (dataset ``npz``; the labels are used as given: no subsampling, no injected noise,
no clean test set) and, with :func:`dsink.pipeline.role_config` and :func:`dsink.train.api.train_run`, trains the
imbalance-robust auxiliary f_L, the noise-robust auxiliary f_N and the target distilled from them (D-SINK by
default), exactly as ``dsink run`` trains those three roles. A stratified share ``val_fraction`` of the rows is
held out as the noisy validation split the runs report on. The target's network is then kept on the estimator
(on the CPU), the label audit of ``dsink audit`` is read off the target run, and the temporary folder is removed.

This is the only module of dsink that imports scikit-learn. See docs/sklearn.md.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, check_random_state
except ImportError as e:  # scikit-learn is an optional dependency
    raise ImportError(f"dsink.DSinkClassifier needs scikit-learn, which is not installed ({e}); install it with "
                      "`pip install dsink[sklearn]` (or `pip install scikit-learn`)", name=e.name) from e

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - scikit-learn 1.3 to 1.5
    def _validate_data(estimator, X="no_validation", y="no_validation", reset=True, **kwargs):
        return estimator._validate_data(X, y, reset=reset, **kwargs)

__all__ = ["DSinkClassifier", "EXCLUDED_CHECKS"]

# Checks of sklearn.utils.estimator_checks that DSinkClassifier is not expected to pass, with the reason. The
# tests run every other check and require it to pass (tests/test_sklearn.py).
EXCLUDED_CHECKS: dict[str, str] = {}

ROLES = ("imbalance", "noise", "target")
_PREDICT_ROWS = 8192  # rows per forward pass in predict_proba


def _distillers() -> list[str]:
    """The registered methods that distil an imbalance and a noise run (the valid ``target_method`` values)."""
    from .methods import get_method, list_methods

    return [m for m in list_methods() if set(get_method(m).auxiliaries) == {"imbalance", "noise"}]


class DSinkClassifier(ClassifierMixin, BaseEstimator):
    """A classifier for long-tailed, noisily labelled feature data: D-SINK distils an imbalance-robust model f_L
    and a noise-robust model f_N into one target through optimal-transport surrogate labels.

    ``fit`` trains f_L, f_N and the target with dsink's own training loop (see the module docstring and
    docs/sklearn.md); the target alone makes the predictions.

    Parameters
    ----------
    imbalance_method : str, default="la"
        f_L: a registered imbalance-robust method (``dsink list methods``), e.g. ``la``, ``bs``, ``ldam_drw``.
    noise_method : str, default="gce"
        f_N: a registered noise-robust method, e.g. ``gce``, ``sce``, ``elr``, ``coteaching``.
    target_method : str, default="dsink"
        The distillation that trains the target from f_L and f_N: ``dsink`` or ``kd`` (their plain average
        distilled, D-SINK without the transport step).
    imbalance_params, noise_params, target_params : dict or None, default=None
        ``method.params`` of each role (e.g. ``{"tau": 1.5}`` for ``la``, ``{"alpha": 1.0}`` for ``dsink``);
        None: the method's defaults.
    model : str, default="mlp"
        A registered network for feature vectors (``mlp``: two hidden ReLU layers).
    width : int, default=0
        Hidden units of the MLP; 0: the model's default (256).
    optimizer : str, default="adam"
    epochs : int, default=30
        Epochs of each of the three trainings.
    lr : float, default=1e-3
    batch_size : int, default=64
    weight_decay : float, default=0.0
    schedule : str, default="constant"
        Learning-rate schedule (``constant``, ``cosine``, ...).
    val_fraction : float, default=0.1
        Share of each class (by its given label) held out as the noisy validation split the runs report on
        (``validation_scores_``); those rows are not trained on and not audited. When it holds out nothing (0, or
        every class has fewer than ``1 / val_fraction`` rows) every row is trained on and audited and
        ``validation_scores_`` is empty.
    device : str, default="cpu"
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; prediction always runs on the CPU.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split, the initialisation and the batch order of all three trainings. An int
        gives identical results on every fit (on one machine).
    verbose : bool, default=False
        Show a progress bar per epoch.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels (the columns of ``predict_proba``).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` had string column names.
    label_issues_ : dict of ndarray
        The training rows whose given label the target's surrogate labels reject (what ``dsink audit`` lists),
        most confident first: ``index`` (row of ``X``), ``given_label`` and ``suggested_label`` (in the space
        of ``classes_``), ``margin`` (``q[suggested] - q[given]``, descending), ``confidence`` (``q[suggested]``)
        and ``given_prob`` (``q[given]``). ``pandas.DataFrame(clf.label_issues_)`` makes it a table.
    validation_scores_ : dict
        ``{"imbalance" | "noise" | "target": {"top1", "macro_f1", "many_acc", "medium_acc", "few_acc"}}``: each
        model's figures on the noisy validation split, as the library reports them (last epoch); empty when
        nothing was held out.
    health_ : dict
        The auxiliaries' health check (:func:`dsink.eval.health.auxiliary_health`): ``ok``, ``warnings`` (an
        auxiliary blind to a class, near-zero validation recall for a class, each naming the better choice; also
        logged as warnings) and ``scores`` (class-balanced noisy-validation accuracy by role).
    model_ : torch.nn.Module
        The target's network (CPU, float64, eval mode); it sees features standardised with ``mean_`` and
        ``scale_`` (per-feature mean and standard deviation of the ``X`` given to ``fit``, as the library's
        input pipeline standardises them in training).
    """

    def __init__(self, imbalance_method: str = "la", noise_method: str = "gce", target_method: str = "dsink", *,
                 imbalance_params: dict | None = None, noise_params: dict | None = None,
                 target_params: dict | None = None, model: str = "mlp", width: int = 0, optimizer: str = "adam",
                 epochs: int = 30, lr: float = 1e-3, batch_size: int = 64, weight_decay: float = 0.0,
                 schedule: str = "constant", val_fraction: float = 0.1, device: str = "cpu", random_state=None,
                 verbose: bool = False):
        self.imbalance_method = imbalance_method
        self.noise_method = noise_method
        self.target_method = target_method
        self.imbalance_params = imbalance_params
        self.noise_params = noise_params
        self.target_params = target_params
        self.model = model
        self.width = width
        self.optimizer = optimizer
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.val_fraction = val_fraction
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------------------------------------ fit
    def fit(self, X, y):
        """Train f_L, f_N and the target on ``X`` (n_samples, n_features) with the given labels ``y``.

        Returns the fitted estimator.
        """
        X, y = _validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        classes = encoder.classes_
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in the data, but the data "
                             f"contains only one class: {classes[0]!r}")
        y_enc = encoder.transform(y).astype(np.int64)
        x32 = np.asarray(X, dtype=np.float32)
        if not np.isfinite(x32).all():
            raise ValueError("X holds values too large for float32 (the precision dsink trains in); rescale the "
                             "features, e.g. with sklearn.preprocessing.StandardScaler")
        self._check_params()
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        counts = np.bincount(y_enc, minlength=len(classes))
        # the library holds out floor(val_fraction * n_c) rows of each class c (dsink.data.builder.make_labels)
        held_out = self.val_fraction > 0 and any(math.floor(self.val_fraction * n) > 0 for n in counts)
        with tempfile.TemporaryDirectory(prefix="dsink-sklearn-") as tmp:
            fitted = self._train(Path(tmp), x32, y_enc, classes, seed, held_out)
        self.classes_ = classes
        for key, value in fitted.items():
            setattr(self, key, value)
        return self

    def _check_params(self) -> None:
        """Refuse values the library would refuse too, before any work (the library re-checks the rest)."""
        from .methods import get_method

        if not isinstance(self.target_method, str) or set(get_method(self.target_method).auxiliaries) != {
                "imbalance", "noise"}:  # get_method: an unknown name is an InputError listing the valid ones
            raise ValueError(f"target_method must be a method that distils f_L and f_N ({', '.join(_distillers())}), "
                             f"got {self.target_method!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        for name in ("imbalance_params", "noise_params", "target_params"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"{name} must be a dict of method parameters or None, got {value!r}")

    def _base_config(self, root: Path, seed: int, val_fraction: float):
        from .config import config_from_dict

        return config_from_dict({
            "data": {"dataset": "npz", "root": str(root / "data.npz"), "imbalance_ratio": 1.0, "noise_mode": "none",
                     "noise_rate": 0.0, "val_fraction": val_fraction, "data_seed": seed,
                     "cache_dir": str(root / "cache")},
            "model": {"name": self.model, "width": self.width},
            "optim": {"optimizer": self.optimizer, "lr": self.lr, "weight_decay": self.weight_decay,
                      "batch_size": self.batch_size, "epochs": self.epochs, "schedule": self.schedule},
            "train": {"seed": seed, "device": self.device, "augment": False, "track_correction": False},
        })

    def _train(self, root: Path, x: np.ndarray, y: np.ndarray, classes: np.ndarray, seed: int,
               held_out: bool) -> dict[str, Any]:
        """Train the three runs under ``root``; the fitted attributes (all but ``classes_``)."""
        import torch

        from .config import MethodConfig
        from .data import build_data
        from .eval.audit import audit_scores, surrogate_for_run
        from .models import build_model
        from .pipeline import METRICS, PipelineConfig, role_config
        from .runs import RunDir
        from .train.api import train_run

        # Without a held-out split the library needs some evaluation split: one placeholder "test" row, whose
        # figures are discarded (validation_scores_ is then empty).
        test = slice(0, 0) if held_out else slice(0, 1)
        np.savez(root / "data.npz", X=x, y=y, X_test=x[test], y_test=y[test],
                 class_names=np.asarray([str(c) for c in classes]))
        base = self._base_config(root, seed, self.val_fraction if held_out else 0.0)
        pipe = PipelineConfig(imbalance=MethodConfig(self.imbalance_method, dict(self.imbalance_params or {})),
                              noise=MethodConfig(self.noise_method, dict(self.noise_params or {})),
                              target=dict(self.target_params or {}), baselines=[], combined=[], seeds=[seed])
        runs = {role: root / role for role in ROLES}
        target = MethodConfig(self.target_method, {**pipe.target, "imbalance_run": str(runs["imbalance"]),
                                                   "noise_run": str(runs["noise"])})
        reports, cfg = {}, None
        for role, method in (("imbalance", pipe.imbalance), ("noise", pipe.noise), ("target", target)):
            cfg = role_config(base, pipe, role, method, seed)
            reports[role] = train_run(cfg, runs[role], progress=bool(self.verbose))

        data = build_data(cfg.data)  # the target's data: its normalisation statistics
        state = RunDir(runs["target"]).load_checkpoint("last")["models"]
        if set(state) != {"net"}:
            raise ValueError(f"target_method {self.target_method!r} trains {len(state)} networks; "
                             "DSinkClassifier predicts with a single-network target (dsink, kd)")
        with torch.random.fork_rng(devices=[]):  # building draws an initialisation: keep the caller's RNG as it was
            net = build_model(cfg.model.name, data.input_shape, data.num_classes, cfg.model.width)
        net.load_state_dict(state["net"])
        net = net.double().eval()
        for p in net.parameters():
            p.requires_grad_(False)

        preds = RunDir(runs["target"]).read_predictions()
        probs, _ = surrogate_for_run(runs["target"])  # what `dsink audit` ranks: D-SINK's surrogate labels
        given = np.array(preds["train_noisy"])
        scores = audit_scores(probs, given)
        order = np.flatnonzero(scores["flagged"])
        order = order[np.argsort(-scores["margin"][order], kind="stable")]
        issues = {"index": np.array(preds["train_index"])[order].astype(np.intp),
                  "given_label": classes[given[order]], "suggested_label": classes[scores["suggested"][order]],
                  "margin": scores["margin"][order], "confidence": scores["confidence"][order],
                  "given_prob": scores["given_prob"][order]}
        validation = {}
        if held_out:
            validation = {role: {m: rep["last"].get(m) for m in METRICS} for role, rep in reports.items()}
        from .eval.health import auxiliary_health

        health = auxiliary_health(runs["imbalance"], runs["noise"],
                                  selected_imbalance=cfg.method.params.get("aux_checkpoint", "last") != "last")
        return {"model_": net, "mean_": np.asarray(data.mean, dtype=np.float64),
                "scale_": np.asarray(data.std, dtype=np.float64), "label_issues_": issues,
                "validation_scores_": validation, "health_": health}

    def __sklearn_is_fitted__(self) -> bool:
        """Fitted once a fit has finished (a failed fit can leave ``n_features_in_`` behind, not a model)."""
        return hasattr(self, "model_")

    # ------------------------------------------------------------------------------------------------ predict
    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities of the target, shape (n_samples, n_classes), columns in ``classes_`` order."""
        import torch

        check_is_fitted(self)
        X = _validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        x = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        out = []
        with torch.inference_mode():
            for start in range(0, len(x), _PREDICT_ROWS):
                logits = self.model_(torch.from_numpy(np.ascontiguousarray(x[start:start + _PREDICT_ROWS])))
                out.append(logits.softmax(1).numpy())
        return np.concatenate(out)

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row, as a label of ``classes_``."""
        proba = self.predict_proba(X)  # first: it checks that the estimator is fitted
        return self.classes_[proba.argmax(1)]
