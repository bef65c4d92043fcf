"""From what a user typed to a config that passed every value check (the config floor: no registries).

The command line's shortcut flags are one table, :data:`FLAGS`: each flag names the config key it sets and
the commands that take it. The ``dsink`` parser is built from the table and :func:`flag_settings` turns the
parsed values into the last layer of :func:`dsink.config.config_layers` (after the YAML file and ``--set``).

:func:`check_values` refuses every setting no run can use (a non-positive learning rate, an empty batch, a
noise rate of 1, ...) with an InputError naming the key and the valid range. It runs in
:func:`dsink.train.resolve_config` (with the registry-name checks and the method defaults), which every
entry point - ``dsink train``/``distill``/``run``, :func:`dsink.train.train_run`, the pipeline - calls
before it writes anything. The data builder runs :func:`check_data_values` for code that builds data from
a bare :class:`~dsink.config.DataConfig`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from .config import DataConfig, RunConfig
from .errors import InputError

COMMANDS = ("train", "distill", "run", "describe", "embed")  # commands with shortcut flags (describe: `dsink data describe`)
_DATA = ("train", "describe", "embed")
_RUNS = ("train", "distill", "run")


@dataclass(frozen=True)
class Flag:
    """A command-line flag that sets one config key."""

    option: str  # "--epochs"
    key: str  # the dotted config key it sets: "optim.epochs"
    commands: tuple[str, ...]  # the commands that take it
    kind: str = "str"  # str | int | float | ints (one or more integers) | switch (present: the key is true)
    help: str = ""

    @property
    def dest(self) -> str:
        """The attribute name of the parsed value (``--imbalance-ratio`` -> ``imbalance_ratio``)."""
        return self.option.lstrip("-").replace("-", "_")


FLAGS: tuple[Flag, ...] = (
    Flag("--dataset", "data.dataset", _DATA, help="data.dataset (see `dsink list datasets`)"),
    Flag("--imbalance-ratio", "data.imbalance_ratio", _DATA, "float", "data.imbalance_ratio (rho >= 1)"),
    Flag("--noise-mode", "data.noise_mode", _DATA, help="data.noise_mode (see `dsink list noise-modes`)"),
    Flag("--noise-rate", "data.noise_rate", _DATA, "float", "data.noise_rate in [0, 1)"),
    Flag("--data-seed", "data.data_seed", _DATA, "int", "data.data_seed"),
    Flag("--root", "data.root", _DATA, help="data.root: folder (or .npz file) with the data"),
    Flag("--method", "method.name", ("train",), help="method.name (see `dsink list methods`)"),
    Flag("--seeds", "pipeline.seeds", ("run",), "ints", "pipeline.seeds (training seeds)"),
    Flag("--vary-data-seed", "pipeline.vary_data_seed", ("run",), "switch",
         "pipeline.vary_data_seed: each seed is also the data seed (subsample, noise, split)"),
    Flag("--epochs", "optim.epochs", _RUNS, "int", "optim.epochs (dsink run: of every model)"),
    Flag("--device", "train.device", _RUNS + ("embed",), help="train.device (auto, cpu, cuda, cuda:N)"),
    Flag("--seed", "train.seed", ("train", "distill"), "int", "train.seed"),
    Flag("--paper", "pipeline.paper", ("run",), "switch",
         "pipeline.paper: also train the paper's reading of D-SINK (method.params.preset=paper) as its own row"),
    Flag("--out", "pipeline.out", ("run",), help="pipeline.out: folder of the results (default runs/pipeline-<hash>)"),
    Flag("--allow-unfinished", "train.allow_unfinished_runs", ("distill",), "switch",
         "train.allow_unfinished_runs: use auxiliary runs that did not finish training (warns; default: refuse them)"),
)


def flags_for(command: str) -> tuple[Flag, ...]:
    """The flags ``command`` takes, in table order."""
    if command not in COMMANDS:
        raise ValueError(f"no shortcut flags for command {command!r}; commands: {', '.join(COMMANDS)}")
    return tuple(f for f in FLAGS if command in f.commands)


def flag_settings(command: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The nested config mapping the flags of ``command`` set, from parsed ``values`` by flag ``dest``
    (``vars(args)``); a flag left out (None, or a switch not given) sets nothing."""
    out: dict[str, Any] = {}
    for flag in flags_for(command):
        v = values.get(flag.dest)
        if v is None or (flag.kind == "switch" and not v):
            continue
        *parents, leaf = flag.key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = list(v) if flag.kind == "ints" else v
    return out


# ------------------------------------------------------------------------------------------ value checks
def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_data_values(d: DataConfig) -> None:
    """Refuse data settings no data set can be built from (InputError naming the key and the valid range)."""
    if not (_finite(d.noise_rate) and 0.0 <= d.noise_rate < 1.0):
        raise InputError(f"data.noise_rate must be in [0, 1), got {d.noise_rate}")
    if not (_finite(d.val_fraction) and 0.0 <= d.val_fraction < 1.0):
        raise InputError(f"data.val_fraction must be in [0, 1), got {d.val_fraction}")
    if not (_finite(d.imbalance_ratio) and d.imbalance_ratio >= 1):
        raise InputError(f"data.imbalance_ratio must be >= 1 (n_max / n_min), got {d.imbalance_ratio}")
    if d.n_max is not None and d.n_max < 1:
        raise InputError(f"data.n_max must be a positive integer or null, got {d.n_max}")


def check_values(cfg: RunConfig) -> None:
    """Refuse every numeric setting no run can use (InputError naming the key and the valid range).

    Names (dataset, model, method, ...) are checked against their registries by
    :func:`dsink.train.resolve_config`, which calls this first-floor check too.
    """
    check_data_values(cfg.data)
    o, t = cfg.optim, cfg.train
    checks = (
        ("optim.epochs", o.epochs, isinstance(o.epochs, int) and o.epochs >= 1, "an integer >= 1"),
        ("optim.batch_size", o.batch_size, isinstance(o.batch_size, int) and o.batch_size >= 1, "an integer >= 1"),
        ("optim.lr", o.lr, _finite(o.lr) and o.lr > 0, "a number > 0"),
        ("optim.weight_decay", o.weight_decay, _finite(o.weight_decay) and o.weight_decay >= 0, "a number >= 0"),
        ("optim.momentum", o.momentum, _finite(o.momentum) and 0 <= o.momentum < 1, "in [0, 1)"),
        ("optim.gamma", o.gamma, _finite(o.gamma) and o.gamma > 0, "a number > 0"),
        ("optim.warmup_epochs", o.warmup_epochs, _finite(o.warmup_epochs) and 0 <= o.warmup_epochs <= o.epochs,
         "in [0, optim.epochs]"),
        ("train.eval_batch_size", t.eval_batch_size, t.eval_batch_size >= 1, "an integer >= 1"),
        ("train.eval_test_every", t.eval_test_every, t.eval_test_every >= 0, "an integer >= 0"),
        ("train.num_threads", t.num_threads, t.num_threads >= 0, "an integer >= 0 (0: torch's default)"),
        ("model.width", cfg.model.width, cfg.model.width >= 0, "an integer >= 0 (0: the model's default)"),
    )
    for key, value, ok, valid in checks:
        if not ok:
            raise InputError(f"{key} must be {valid}, got {value!r}")
    bad = [m for m in o.milestones if not (isinstance(m, int) and 0 < m <= o.epochs)]
    if bad:
        raise InputError(f"optim.milestones must be epochs in 1..optim.epochs ({o.epochs}), got {bad}")
