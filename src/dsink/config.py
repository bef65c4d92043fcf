"""Typed run configuration: the single home of defaults.

A run is described by :class:`RunConfig`, built from dataclass defaults, then a YAML
file, then ``key=value`` overrides (``--set optim.lr=0.05``), then command-line flags
(:func:`config_layers`). Unknown keys are errors. :mod:`dsink.resolve` maps the flags to keys and
checks every value; the resolved config is stored in every run directory as ``config.yaml``, and
:func:`config_hash` (execution-only keys excluded) names run directories.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import InputError


@dataclass
class DataConfig:
    """Which data, how it is made long-tailed and how its labels are corrupted."""

    dataset: str = "fashion_mnist"  # a registered dataset (`dsink list datasets`)
    root: str | None = None  # folder with the dataset files; None = standard places
    download: bool = False  # allow downloading when the files are not found
    imbalance_ratio: float = 100.0  # rho = n_max / n_min; 1 = balanced
    profile: str = "exp"  # "exp" or "step"
    n_max: int | None = None  # size of the largest class; None = the dataset's own
    noise_mode: str = "uniform_excl_true"  # a registered noise mode or alias (`dsink list noise-modes`)
    noise_rate: float = 0.4
    human_label: str = "worse_label"  # CIFAR-N label set for noise_mode=human
    cifar_n_path: str | None = None  # CIFAR-N .pt file; None = $DSINK_CIFAR_N_DIR, then $DSINK_CACHE/cifar-n
    csv_path: str | None = None  # image_folder: CSV of (path,label[,split,true_label]) instead of class subfolders
    image_size: int = 0  # image files: shorter side resized to this, then centre-cropped square; 0 = keep each size
    skip_unreadable: bool = False  # image files: list and skip files that cannot be decoded (default: refuse them)
    stream: bool | None = None  # decode image files per batch in DataLoader workers; None = the size rule (docs/guide.md: Memory and streaming)
    workers: int = -1  # DataLoader decode processes for image files; -1 = min(8, CPUs); 0 = the main process
    data_seed: int = 0  # subsampling and noise injection
    val_fraction: float = 0.1  # share of the noisy training set held out for model selection
    cache_dir: str | None = None  # generated index/label files; None = $DSINK_CACHE or ~/.cache/dsink


@dataclass
class ModelConfig:
    """Network architecture (see ``dsink list models``)."""

    name: str = "small_cnn"
    width: int = 0  # architecture-specific width multiplier/hidden size; 0 = the model's default
    pretrained: str | None = None  # torchvision backbones: a state-dict file, or true = torchvision's weights (hub cache)
    freeze_backbone: bool = False  # pretrained backbones: train only the new classifier head
    backbone_lr_scale: float = 0.1  # pretrained backbones: the backbone's learning rate = optim.lr * this


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule."""

    optimizer: str = "sgd"  # a registered optimiser (`dsink list optimizers`)
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    batch_size: int = 128
    epochs: int = 30
    schedule: str = "cosine"  # a registered schedule (`dsink list schedules`)
    milestones: list[int] = field(default_factory=list)  # epochs at which multistep decays
    gamma: float = 0.1  # multistep decay factor
    warmup_epochs: float = 0.0  # linear warm-up length


@dataclass
class TrainConfig:
    """Execution: device, precision, augmentation, seeding."""

    seed: int = 0  # training seed (model init, batch order, augmentation)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU
    augment: bool = True  # random crop (pad 4) + horizontal flip for images
    hflip: bool = True  # horizontal flips (off for data where flips change meaning)
    channels_last: bool = True  # memory format for conv nets
    eval_batch_size: int = 1024
    eval_test_every: int = 0  # log test accuracy every k epochs (0: only in the final evaluation)
    track_correction: bool = False  # log the label-correction rate each epoch (benchmark data: true labels known)
    num_threads: int = 0  # torch CPU threads; 0 = torch's default
    deterministic: bool = False  # torch.use_deterministic_algorithms (for CUDA)
    allow_unfinished_runs: bool = False  # let D-SINK use auxiliary runs that did not finish (warns)
    tensorboard: str | None = None  # folder of live TensorBoard logs, one run per model (needs `pip install tensorboard`)


@dataclass
class MethodConfig:
    """The training method and its own parameters (validated by the method)."""

    name: str = "ce"  # a registered method (`dsink list methods`)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    """Everything that defines a training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: MethodConfig = field(default_factory=MethodConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON ready)."""
        return dataclasses.asdict(self)

    def fingerprint(self, *sections: str) -> str:
        """:func:`config_hash` of the given sections (all when none): what the run computes, execution-only
        keys excluded. A run's identity is the fingerprint of its resolved config (``dsink.train.resolve_config``)."""
        return config_hash(self, *sections)


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise an InputError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else []
            if not isinstance(value, list):
                value = [value]
        if not isinstance(value, (list, tuple)):
            raise InputError(f"config key {key!r} expects a list, got {value!r}")
        return [_coerce(v, item, key) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise InputError(f"config key {key!r} expects a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise InputError(f"config key {key!r} expects true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise InputError(f"config key {key!r} expects a number, got {value!r}")
        try:
            out = tp(value) if not isinstance(value, str) else tp(float(value)) if tp is float else int(value)
        except (TypeError, ValueError):
            raise InputError(f"config key {key!r} expects {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != int(value):
            raise InputError(f"config key {key!r} expects an integer, got {value!r}")
        return out
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise InputError(f"config key {key!r} expects a string, got {value!r}")
        return str(value)
    return value


def build_dataclass(cls, data: dict[str, Any], prefix: str = ""):
    """An instance of the dataclass ``cls`` from a (possibly partial) nested dict, every value coerced to its
    annotated type; unknown keys and uncoercible values are InputErrors naming the key (``prefix`` + name)."""
    if not isinstance(data, dict):
        raise InputError(f"config section {prefix.rstrip('.') or 'root'!r} must be a mapping, got {data!r}")
    types_ = _field_types(cls)
    unknown = set(data) - set(types_)
    if unknown:
        raise InputError(
            f"unknown config key(s) {', '.join(prefix + k for k in sorted(unknown))}; "
            f"valid keys in {prefix.rstrip('.') or 'root'}: {', '.join(types_)}"
        )
    kwargs = {}
    for name, tp in types_.items():
        if name not in data:
            continue
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build_dataclass(tp, data[name], prefix + name + ".")
        else:
            kwargs[name] = _coerce(data[name], tp, prefix + name)
    return cls(**kwargs)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["optim.lr=0.05", "method.params.alpha=1"]`` into a nested dict."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"override {pair!r} is not of the form key=value (e.g. optim.lr=0.05)")
        key, raw = pair.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise InputError(f"override key {key!r} is malformed; use dotted keys like optim.lr")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise InputError(f"override {pair!r} conflicts with an earlier override")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def merge(base: dict, upd: dict) -> dict:
    """``base`` updated by ``upd``, nested mappings merged key by key (neither input is changed)."""
    out = dict(base)
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig from a (possibly partial) nested dict."""
    return build_dataclass(RunConfig, data or {}, "")


def config_layers(path: str | Path | None = None, overrides: list[str] | None = None, *,
                  base: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The nested dict of a config, layer on layer: ``base`` (a starting mapping, e.g. a stored run's
    config), the YAML file at ``path``, ``key=value`` overrides (``--set``), then ``settings`` (a nested
    mapping of typed values: the command-line flags, :func:`dsink.resolve.flag_settings`). Later layers win."""
    data = merge(copy.deepcopy(base or {}), read_yaml_config(path))
    data = merge(merge(data, parse_overrides(overrides or [])), settings or {})
    for fn in _DEFAULT_HOOKS.values():  # defaults that depend on the config (a dataset's own), beneath every layer
        data = merge(fn(data) or {}, data)
    return data


# name -> fn(nested config dict) -> nested defaults placed beneath every layer (see add_default_hook)
_DEFAULT_HOOKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def add_default_hook(name: str, fn: Callable[[dict[str, Any]], dict[str, Any]] | None) -> None:
    """Install (or with ``fn=None`` remove) ``fn(layers) -> defaults``: :func:`config_layers` puts the nested
    mapping it returns beneath every layer, so any value the user gives still wins. Use: a dataset's own
    defaults (``data.noise_mode: none`` for a benchmark whose labels are already noisy; ``dsink.data.datasets``
    installs the hook when the dataset registry is loaded)."""
    if fn is None:
        _DEFAULT_HOOKS.pop(name, None)
    else:
        _DEFAULT_HOOKS[name] = fn


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, *,
                base: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then ``base``, the YAML file at ``path`` (if any), ``key=value`` overrides and ``settings``
    (see :func:`config_layers`). Values are typed here; their ranges are checked by the resolver
    (:func:`dsink.resolve.check_values`, run by :func:`dsink.train.resolve_config`)."""
    return config_from_dict(config_layers(path, overrides, base=base, settings=settings))


def read_yaml_config(path: str | Path | None) -> dict[str, Any]:
    """The mapping in a YAML config file (empty for ``None``); missing or malformed files are InputErrors."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file {str(p)!r} not found; pass an existing YAML file (see configs/)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InputError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"config file {str(p)!r} must hold a mapping of sections (data, model, optim, train, ...)")
    return data


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from .fileio import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# ---------------------------------------------------------------------------------------------- the config hash
# Keys that change how a run executes, not what it computes: they may differ on resume and are not hashed.
EXECUTION_KEYS = frozenset({"train.device", "train.num_threads", "train.eval_batch_size", "data.root", "data.download",
                            "data.cache_dir", "data.cifar_n_path", "data.csv_path", "train.allow_unfinished_runs",
                            "data.stream", "data.workers", "train.tensorboard"})
HASH_LENGTH = 12  # hex digits of a config hash (run directory names end in it)
# name -> fn(cfg, semantic dict) -> semantic dict: rewrites applied before hashing (see add_hash_hook)
_HASH_HOOKS: dict[str, Callable[[RunConfig, dict[str, Any]], dict[str, Any]]] = {}


def flat_keys(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{"optim.lr": 0.1, ...}``; ``method.params`` stays one value (a mapping)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and not (prefix == "method." and k == "params"):
            out.update(flat_keys(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def add_hash_hook(name: str, fn: Callable[[RunConfig, dict[str, Any]], dict[str, Any]] | None) -> None:
    """Install (or with ``fn=None`` remove) the rewrite ``fn(cfg, semantic) -> semantic`` under ``name``.

    :func:`semantic_dict` applies every hook, so all hashes of a config (its fingerprint, a pipeline's cache
    folder, the default ``--out``) agree. Use: replace an auxiliary run's *path* in ``method.params`` by that
    run's identity, so that moving the run does not change the hash of a run made from it.
    """
    if fn is None:
        _HASH_HOOKS.pop(name, None)
    else:
        _HASH_HOOKS[name] = fn


def semantic_dict(cfg: RunConfig, *sections: str) -> dict[str, Any]:
    """What ``cfg`` computes, as flat keys (:func:`flat_keys`): execution-only keys (:data:`EXECUTION_KEYS`)
    dropped, only the given sections when some are named, then the hash hooks applied (:func:`add_hash_hook`)."""
    flat = {k: v for k, v in flat_keys(cfg.to_dict()).items() if k not in EXECUTION_KEYS}
    if sections:
        flat = {k: v for k, v in flat.items() if k.split(".", 1)[0] in sections}
    for fn in _HASH_HOOKS.values():
        flat = fn(cfg, flat)
    return flat


def digest(data: Any) -> str:
    """The hash of JSON-able ``data`` (sorted keys; other values as strings): :data:`HASH_LENGTH` hex digits."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:HASH_LENGTH]


def config_hash(cfg: RunConfig | dict[str, Any], *sections: str) -> str:
    """The one config hash: :func:`digest` of :func:`semantic_dict` (or of such a dict given directly).

    Hash a *resolved* config (``dsink.train.resolve_config``: method defaults filled in), so that a setting
    left at its default and the same value written out give one hash.
    """
    return digest(cfg if isinstance(cfg, dict) else semantic_dict(cfg, *sections))


def run_name(cfg: RunConfig) -> str:
    """``<method>-<dataset>-<config hash>``: the folder name of a run (default ``--out``, pipeline cache)."""
    return f"{cfg.method.name}-{cfg.data.dataset}-{config_hash(cfg)}"
