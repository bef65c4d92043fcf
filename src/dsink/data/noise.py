"""Label-noise injection, named by mechanism, with the field's aliases.

Every synthetic mode picks exactly ``floor(rate * N)`` samples (``semantic``: exactly
``floor(rate * n_c)`` samples of each mapped class ``c``) with a seeded generator, then
relabels them:

====================  =======================================================  =====================================
mode                  relabelled to                                            known as
====================  =======================================================  =====================================
uniform_incl_true     uniform over all C classes (may keep the true one, so    TABASCO ``unif``, DivideMix ``sym``
                      the real flip rate is about rate * (C-1)/C)
uniform_excl_true     uniform over the C-1 other classes                       RoLT ``sym``, Co-teaching ``symmetric``
class_size_prop       another class, with probability proportional to its      RoLT / SFA / IBC ``imb``
                      size in the (long-tailed) set
pair_random           the one other class that a seeded random map assigns     TABASCO ``flip``
                      to its class
semantic              a fixed confusable class (``SEMANTIC_MAPS``)             DivideMix / ELR ``asym``
human                 real annotators' labels (CIFAR-10N/100N files)           CIFAR-N
none                  unchanged
====================  =======================================================  =====================================

The bare name ``sym`` is refused: the papers disagree on whether it includes the true class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import InputError
from ..registry import Registry

NoiseFn = Callable[..., np.ndarray]  # f(labels, rate, num_classes, rng, *, class_map, human_labels) -> noisy labels
NOISE_MODE_REGISTRY: Registry[NoiseFn] = Registry("noise mode", "modes", error_order="registered")


def register_noise_mode(name: str, fn: NoiseFn | None = None, *, aliases: tuple[str, ...] = (), description: str = "",
                        **info: Any):
    """Register a noise mode (a decorator without ``fn``) with the field's ``aliases`` for it.

    ``fn(labels, rate, num_classes, rng, *, class_map=None, human_labels=None)`` gets checked int64 labels,
    a rate in [0, 1) and a seeded ``numpy.random.Generator``, and returns the noisy labels (a new array).
    """
    return NOISE_MODE_REGISTRY.register(name, fn, aliases=aliases, description=description, **info)


def list_noise_modes(filter: str | None = None) -> list[str]:
    """Names of the registered noise modes, sorted (aliases: :func:`noise_mode_info`)."""
    return NOISE_MODE_REGISTRY.list(filter)


def get_noise_mode(name: str) -> NoiseFn:
    """The relabelling function of a noise mode or alias; an unknown name is an InputError listing the valid ones."""
    return NOISE_MODE_REGISTRY.get(canonical_noise_mode(name))


def noise_mode_info(name: str) -> dict[str, Any]:
    """``name``, ``description`` and ``aliases`` of a noise mode (or of the mode an alias names)."""
    return NOISE_MODE_REGISTRY.info(canonical_noise_mode(name))


# Class maps for `semantic` noise: source class -> confusable target class (-1: never flipped).
_FMNIST_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SEMANTIC_MAPS: dict[str, np.ndarray] = {
    # DivideMix/ELR: truck->automobile, bird->airplane, deer->horse, cat<->dog.
    "cifar10": np.array([-1, -1, 0, 5, 7, 3, -1, -1, -1, 1]),
    # DivideMix/ELR: next class, circularly, within each block of 5 consecutive class indices.
    "cifar100": np.array([5 * (c // 5) + (c + 1) % 5 for c in range(100)]),
    # dsink's map of confusable Fashion-MNIST pairs: T-shirt<->shirt, pullover<->coat,
    # sneaker<->ankle boot, sandal->sneaker; trouser, dress and bag are never flipped.
    "fashion_mnist": np.array([6, -1, 4, -1, 2, 7, 0, 9, -1, 7]),
}


def canonical_noise_mode(mode: str) -> str:
    """Resolve an alias to its mechanism name; raise InputError for unknown or ambiguous names."""
    if mode == "sym" and mode not in NOISE_MODE_REGISTRY:
        raise InputError(
            "noise mode 'sym' is ambiguous: RoLT's sym excludes the true class (use uniform_excl_true), "
            "DivideMix's includes it (use uniform_incl_true)"
        )
    return NOISE_MODE_REGISTRY.resolve(mode)


def check_labels(labels, num_classes: int | None, what: str = "labels") -> np.ndarray:
    """Return labels as an int64 vector after checking they are integer class indices in [0, num_classes).

    Floats that hold whole numbers are accepted; strings, booleans, objects, complex numbers, NaN/Inf
    and fractions are refused. With ``num_classes=None`` only the type is checked, not the range.
    """
    fix = "labels must be integer class indices 0..K-1; map class names or codes to indices first"
    try:
        arr = np.asarray(labels)
    except (ValueError, TypeError) as e:
        raise InputError(f"{what} cannot be read as an array of class indices ({e}); {fix}") from None
    if arr.ndim != 1:
        raise InputError(f"{what} must be a 1-D array of class indices, got shape {arr.shape}")
    kind = arr.dtype.kind
    if arr.size and kind not in "iu":
        if kind == "f":
            bad = ~np.isfinite(arr)
            if bad.any():
                raise InputError(f"{what} holds NaN or Inf ({int(bad.sum())} entries); {fix}")
            frac = arr != np.round(arr)
            if frac.any():
                raise InputError(f"{what} holds non-whole numbers such as {float(arr[frac][0])!r}; {fix}")
            if np.abs(arr).max() >= 2.0**53:
                raise InputError(f"{what} holds values too large for class indices (up to {float(arr.max())!r}); {fix}")
        else:
            desc = {"U": "strings", "S": "byte strings", "O": "Python objects", "b": "booleans",
                    "c": "complex numbers", "M": "dates", "m": "time spans"}.get(kind, "non-numeric values")
            raise InputError(f"{what} holds {desc} (dtype {arr.dtype}); {fix}")
    if arr.size and kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise InputError(f"{what} holds values too large for class indices (up to {arr.max()}); {fix}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and num_classes is not None and (arr.min() < 0 or arr.max() >= num_classes):
        raise InputError(
            f"{what} must lie in [0, {num_classes}) for {num_classes} classes; found values "
            f"{int(arr.min())}..{int(arr.max())}"
        )
    return arr


def _check_rate(rate: float) -> float:
    if not isinstance(rate, (int, float, np.number)) or not (0.0 <= float(rate) < 1.0):
        raise InputError(f"noise rate must be in [0, 1), got {rate!r}")
    return float(rate)


def resolve_class_map(class_map, num_classes: int) -> np.ndarray:
    """A semantic class map as an int array of length C (-1 or c itself: class c is not flipped)."""
    if class_map is None:
        raise InputError(
            f"semantic noise needs class_map: one of {', '.join(SEMANTIC_MAPS)} or an array of length {num_classes}"
        )
    if isinstance(class_map, str):
        if class_map not in SEMANTIC_MAPS:
            raise InputError(f"unknown semantic class map {class_map!r}; valid maps: {', '.join(SEMANTIC_MAPS)}")
        class_map = SEMANTIC_MAPS[class_map]
    arr = np.asarray(class_map, dtype=np.int64)
    if arr.shape != (num_classes,) or arr.min() < -1 or arr.max() >= num_classes:
        raise InputError(f"class_map must have length {num_classes} with entries in [-1, {num_classes}), got {arr}")
    return arr


def inject_noise(
    labels,
    mode: str,
    rate: float,
    num_classes: int,
    seed: int,
    *,
    class_map=None,
    human_labels=None,
) -> np.ndarray:
    """Corrupt ``labels`` with the named noise ``mode`` at ``rate``.

    Parameters
    ----------
    labels : array of int, shape (N,)
        True labels.
    mode : str
        A registered mode (:func:`list_noise_modes`, module docstring) or one of its aliases.
    rate : float in [0, 1)
        Share of samples selected for relabelling (ignored for ``human`` and ``none``).
    num_classes : int
    seed : int
        Seed of the ``numpy.random.Generator`` used; the global RNG is never touched.
    class_map : str or array of int, optional
        For ``semantic``: ``"cifar10"``, ``"cifar100"``, ``"fashion_mnist"`` or an array (module docstring).
    human_labels : array of int, shape (N,), optional
        For ``human``: the annotators' labels of the same samples.

    Returns
    -------
    ndarray of int64, shape (N,)
        Noisy labels; a new array.
    """
    mode = canonical_noise_mode(mode)
    y = check_labels(labels, num_classes)
    rate = _check_rate(rate)
    rng = np.random.default_rng(seed)
    return NOISE_MODE_REGISTRY.get(mode)(y, rate, num_classes, rng, class_map=class_map, human_labels=human_labels)


def _chosen(y: np.ndarray, rate: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """The ``floor(rate * N)`` samples a synthetic mode relabels."""
    _need_two_classes(num_classes)
    return rng.permutation(len(y))[: int(np.floor(rate * len(y)))]


def _need_two_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise InputError("label noise needs at least 2 classes")


@register_noise_mode("uniform_incl_true", aliases=("unif", "tabasco_unif", "dividemix_sym"),
                     description="uniform over all C classes (may keep the true one)")
def _uniform_incl_true(y, rate, num_classes, rng, **_):
    noisy, chosen = y.copy(), _chosen(y, rate, num_classes, rng)
    noisy[chosen] = rng.integers(0, num_classes, size=len(chosen))
    return noisy


@register_noise_mode("uniform_excl_true", aliases=("rolt_sym", "coteaching_symmetric", "symmetric"),
                     description="uniform over the C-1 other classes")
def _uniform_excl_true(y, rate, num_classes, rng, **_):
    noisy, chosen = y.copy(), _chosen(y, rate, num_classes, rng)
    noisy[chosen] = (y[chosen] + rng.integers(1, num_classes, size=len(chosen))) % num_classes
    return noisy


@register_noise_mode("class_size_prop", aliases=("imb", "rolt_imb"),
                     description="another class, with probability proportional to its size")
def _class_size_prop(y, rate, num_classes, rng, **_):
    noisy, chosen = y.copy(), _chosen(y, rate, num_classes, rng)
    sizes = np.bincount(y, minlength=num_classes).astype(np.float64)
    probs = np.tile(sizes, (num_classes, 1))
    np.fill_diagonal(probs, 0.0)
    rows = probs.sum(1, keepdims=True)
    # A class whose peers are all empty falls back to uniform over the others.
    probs = np.where(rows > 0, probs / np.where(rows > 0, rows, 1), (1 - np.eye(num_classes)) / (num_classes - 1))
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(chosen))
    new = (u[:, None] > cdf[y[chosen]]).sum(1)
    noisy[chosen] = np.minimum(new, num_classes - 1)
    return noisy


@register_noise_mode("pair_random", aliases=("flip", "tabasco_flip"),
                     description="the one other class a seeded random map assigns to its class")
def _pair_random(y, rate, num_classes, rng, **_):
    noisy, chosen = y.copy(), _chosen(y, rate, num_classes, rng)
    noisy[chosen] = pair_random_map(num_classes, rng)[y[chosen]]
    return noisy


@register_noise_mode("semantic", aliases=("asym", "dividemix_asym", "elr_asym"),
                     description="a fixed confusable class (SEMANTIC_MAPS); floor(rate * n_c) of each mapped class")
def _semantic(y, rate, num_classes, rng, *, class_map=None, **_):
    _need_two_classes(num_classes)
    noisy = y.copy()
    cmap = resolve_class_map(class_map, num_classes)
    for c in range(num_classes):
        if cmap[c] < 0 or cmap[c] == c:
            continue
        pool = np.flatnonzero(y == c)
        chosen = rng.permutation(pool)[: int(np.floor(rate * len(pool)))]
        noisy[chosen] = cmap[c]
    return noisy


@register_noise_mode("human", description="real annotators' labels (CIFAR-10N/100N files; data.human_label)")
def _human(y, rate, num_classes, rng, *, human_labels=None, **_):
    if human_labels is None:
        raise InputError("human noise needs human_labels (e.g. a CIFAR-N label set)")
    h = check_labels(human_labels, num_classes, "human_labels")
    if h.shape != y.shape:
        raise InputError(f"human_labels has {len(h)} entries but labels has {len(y)}")
    return h.copy()


@register_noise_mode("none", aliases=("clean",), description="labels unchanged")
def _none(y, rate, num_classes, rng, **_):
    return y.copy()


def pair_random_map(num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded map sending each class to one uniformly chosen *other* class."""
    return (np.arange(num_classes) + rng.integers(1, num_classes, size=num_classes)) % num_classes


@dataclass
class NoiseReport:
    """What the noise did: realised rate, transition matrix T[true, noisy] (row-normalised) and histograms."""

    noise_rate: float
    transition: np.ndarray  # (C, C), rows sum to 1 (0 for empty classes)
    noisy_counts: np.ndarray  # (C,) observed label histogram
    true_counts: np.ndarray  # (C,)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "noise_rate": self.noise_rate,
            "transition": np.round(self.transition, 6).tolist(),
            "noisy_counts": self.noisy_counts.tolist(),
            "true_counts": self.true_counts.tolist(),
        }


def noise_report(true_labels, noisy_labels, num_classes: int) -> NoiseReport:
    """Realised noise rate, transition matrix and label histograms of a noisy labelling."""
    t = check_labels(true_labels, num_classes, "true labels")
    z = check_labels(noisy_labels, num_classes, "noisy labels")
    if t.shape != z.shape:
        raise InputError(f"true and noisy labels differ in length ({len(t)} vs {len(z)})")
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (t, z), 1)
    rows = counts.sum(1, keepdims=True)
    trans = counts / np.maximum(rows, 1)
    rate = float((t != z).mean()) if len(t) else 0.0
    return NoiseReport(rate, trans, np.bincount(z, minlength=num_classes), np.bincount(t, minlength=num_classes))
