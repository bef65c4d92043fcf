"""``dsink plot``: PNG figures of a run, a ``dsink run`` pipeline or a claims benchmark result.

* ``per_class.png`` - test accuracy of each class against its training size (log scale), one series
  per method (mean over seeds);
* ``correction.png`` - label-correction curves: per epoch, the share of noisy training labels whose
  prediction is the true label (runs trained with ``train.track_correction=true``);
* ``embedding.png`` - only when asked for (``dsink plot --embedding``: it takes minutes on large data): a 2-D
  embedding (t-SNE when scikit-learn is installed, else PCA) of the target's penultimate features on up to 2,000
  training samples, coloured by true class, mislabelled samples marked;
* ``alpha.png`` - D-SINK's top-1 against alpha per setting (claims benchmark JSON).

matplotlib is an optional dependency (``pip install 'dsink[plot]'``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .runs import RunDir

log = logging.getLogger(__name__)


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("dsink plot needs matplotlib; install it with pip install 'dsink[plot]'") from None
    return plt


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {str(path)!r} ({e}); pass a run directory, a dsink run folder or a claims JSON") from None


def _mean_curves(runs: list[Path], key: str) -> np.ndarray | None:
    curves = [[r.get(key) for r in RunDir(run).read_metrics()] for run in runs]
    curves = [c for c in curves if c and all(v is not None for v in c)]
    if not curves:
        return None
    n = min(len(c) for c in curves)
    return np.mean([c[:n] for c in curves], axis=0)


def _savefig(fig, path: Path) -> Path:
    """Writes the figure as PNG (atomically) and closes it."""
    from .fileio import atomic_write

    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
    finally:
        _plt().close(fig)
    return path


def _finish(fig, ax, xlabel: str, ylabel: str, title: str, path: Path) -> Path:
    """Labels, grid and legend of a line plot, then :func:`_savefig`."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _savefig(fig, path)


def plot_per_class(groups: dict[str, list[Path]], out: Path) -> Path | None:
    """Per-class test accuracy against class training size, one series per method."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn, on_val = False, False
    for label, runs in groups.items():
        evals = [RunDir(r).read_eval() for r in runs if RunDir(r).has_eval()]
        if not evals:
            continue
        on_val = on_val or any(e.get("evaluated_on", "test") != "test" for e in evals)
        counts = np.asarray(evals[0]["train_class_counts"], dtype=float)
        acc = np.nanmean([[np.nan if a is None else a for a in e["last"]["per_class_acc"]] for e in evals], axis=0)
        order = np.argsort(-counts)
        ax.plot(counts[order], 100 * acc[order], marker="o", label=label)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    split = "noisy-validation" if on_val else "test"  # data without a clean test split are evaluated on validation
    return _finish(fig, ax, "training samples of the class (true labels, log scale)", f"{split} accuracy of the class (%)",
                   "Per-class accuracy against class size", out / "per_class.png")


def plot_correction(curves: dict[str, np.ndarray], out: Path, name: str = "correction.png", title: str = "") -> Path | None:
    """Label-correction curves (percent per epoch)."""
    curves = {k: v for k, v in curves.items() if v is not None and len(v)}
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, c in curves.items():
        ax.plot(np.arange(1, len(c) + 1), 100 * np.asarray(c), marker=".", label=label)
    return _finish(fig, ax, "epoch", "noisy training labels predicted as the true label (%)", title or "Label correction",
                   out / name)


def embed_2d(feats: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D embedding: t-SNE (scikit-learn) when available, else PCA."""
    try:
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, max(2, len(feats) // 4))).fit_transform(feats), "t-SNE"
    except ImportError:
        x = feats - feats.mean(0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        return x @ vt[:2].T, "PCA"


def target_features(run: Path, max_samples: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """Penultimate features of a run's network (the first one) on a random subset of the training set."""
    import torch

    from .data import build_data
    from .train.engine import Trainer
    from .train.inputs import method_inputs

    run = RunDir(run)
    cfg = run.load_config()
    cfg.train.device = "cpu"
    data = build_data(cfg.data)
    inputs = method_inputs(cfg.method, data.fingerprint, run, allow_unfinished=cfg.train.allow_unfinished_runs)
    trainer = Trainer(cfg, data, run, inputs=inputs)
    trainer.load_weights("last")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(data.train_y), size=min(max_samples, len(data.train_y)), replace=False))
    net = next(iter(trainer.models.values()))
    net.eval()
    with torch.inference_mode():
        feats = torch.cat([net.features(trainer.pipeline(raw)).float().flatten(1).cpu()
                           for _, raw in trainer.batches("train", torch.as_tensor(idx), 512)]).numpy()
    out = {"features": feats, "given": data.train_y[idx], "index": idx}
    if data.train_true is not None:
        out["true"] = data.train_true[idx]
    out["class_names"] = np.asarray(data.class_names)
    return out


def plot_embedding(run: Path, out: Path, max_samples: int = 2000) -> Path:
    """2-D embedding of a run's features, coloured by true class (given class when unknown), noisy marked."""
    plt = _plt()
    f = target_features(run, max_samples)
    xy, how = embed_2d(f["features"])
    colour = f.get("true", f["given"])
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=colour, cmap="tab10" if colour.max() < 10 else "tab20", s=6, alpha=0.8)
    if "true" in f:
        noisy = f["true"] != f["given"]
        ax.scatter(xy[noisy, 0], xy[noisy, 1], facecolors="none", edgecolors="black", s=18, linewidths=0.5,
                   label=f"mislabelled ({int(noisy.sum())})")
        ax.legend(fontsize=8, loc="best")
    handles, _ = sc.legend_elements(num=None)
    names = f["class_names"]
    if len(handles) <= 20:
        ax.add_artist(ax.legend(handles, [names[i] for i in np.unique(colour)], fontsize=6, loc="upper left",
                                bbox_to_anchor=(1.01, 1)))
    ax.set_title(f"{how} of the penultimate features of {run.name} ({len(xy)} training samples)")
    ax.set_xticks([])
    ax.set_yticks([])
    return _savefig(fig, out / "embedding.png")


def plot_alpha(settings: list[dict[str, Any]], out: Path) -> Path | None:
    """D-SINK top-1 (mean +- std over seeds) against alpha, one line per setting."""
    settings = [s for s in settings if s.get("alpha")]
    if not settings:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in settings:
        pts = sorted((float(a), v["top1"], v.get("top1_std") or 0) for a, v in s["alpha"].items())
        a, m, sd = map(np.asarray, zip(*pts))
        ax.errorbar(a, 100 * m, yerr=100 * sd, marker="o", capsize=3, label=s["setting"])
    ax.set_xscale("log", base=2)
    return _finish(fig, ax, "alpha (weight of the distillation term)", "D-SINK test top-1 (%)", "alpha sweep",
                   out / "alpha.png")


def plot_path(path: str | Path, out: str | Path | None = None, *, embedding: bool = False) -> list[Path]:
    """All figures that apply to ``path`` (run directory, ``dsink run`` folder, or claims JSON), the embedding only
    with ``embedding``; returns their paths."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{str(path)!r} does not exist; pass a run directory, a dsink run folder or a claims JSON")
    written: list[Path | None] = []
    if path.is_file():
        res = _read_json(path)
        if "settings" not in res:
            raise InputError(f"{str(path)!r} is not a claims benchmark result (no 'settings'); pass benchmarks/results/claims.json")
        out = Path(out) if out else path.parent / (path.stem + "_plots")
        out.mkdir(parents=True, exist_ok=True)
        written.append(plot_alpha(res["settings"], out))
        for i, s in enumerate(res["settings"]):
            curves = {k: np.asarray(v) for k, v in (s.get("correction_curve") or {}).items()}
            written.append(plot_correction(curves, out, name=f"correction_{i}.png", title=f"Label correction, {s['setting']}"))
        return [p for p in written if p]
    run = RunDir(path)
    out = Path(out) if out else run.plots_dir
    out.mkdir(parents=True, exist_ok=True)
    if (path / "results.json").exists():  # a dsink run folder
        res = _read_json(path / "results.json")
        groups = {r["method"]: [Path(d) for d in r["runs"]] for r in res["rows"]}
        target = next((Path(r["runs"][0]) for r in res["rows"] if r["role"] == "target"), None)
    elif run.has_eval():
        groups = {path.name: [path]}
        target = path if run.has_config() else None  # an average has no network to embed
    else:
        raise InputError(f"{str(path)!r} holds neither results.json nor {RunDir.EVAL}; pass a finished run or dsink run "
                         "folder")
    written.append(plot_per_class(groups, out))
    written.append(plot_correction({k: _mean_curves(v, "train_correction") for k, v in groups.items()}, out))
    if embedding and target is not None:
        written.append(plot_embedding(target, out))
    return [p for p in written if p]
