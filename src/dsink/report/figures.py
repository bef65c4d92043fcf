"""The report's figures as PNG data URIs (matplotlib, an optional dependency: :func:`have_matplotlib`)."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

DPI = 90


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported (``pip install 'dsink[plot]'``)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _uri(fig) -> str:
    plt = _plt()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _lines(curves: dict[str, list[float]], xlabel: str, ylabel: str, title: str, *, x=None, logx=False,
           highlight: str | None = None) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, ys in curves.items():
        xs = np.arange(1, len(ys) + 1) if x is None else x[label]
        ys = np.array([np.nan if v is None else 100 * v for v in ys], dtype=float)
        ax.plot(xs, ys, marker="o" if x is not None else ".", label=label,
                linewidth=2.6 if label == highlight else 1.4)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _uri(fig)


def per_class_figure(pc: dict[str, Any], split: str, highlight: str | None = None) -> str:
    """Per-class accuracy against the class's training size (log scale), one series per method."""
    counts = np.asarray(pc["counts"], dtype=float)
    order = np.argsort(-counts)
    curves = {m: [acc[i] for i in order] for m, acc in pc["acc"].items()}
    return _lines(curves, "training samples of the class (true labels, log scale)", f"{split} accuracy of the class (%)",
                  "Per-class accuracy against class size", x={m: counts[order] for m in curves}, logx=True,
                  highlight=highlight)


def curve_figure(curves: dict[str, list[float]], ylabel: str, title: str, highlight: str | None = None) -> str:
    """Per-epoch curves (percent), one per method."""
    return _lines(curves, "epoch", ylabel, title, highlight=highlight)


def confusion_figure(conf: dict[str, Any], title: str) -> str:
    """The confusion matrix, row-normalised colours, counts written in the cells (up to 20 classes)."""
    plt = _plt()
    m = np.asarray(conf["matrix"], dtype=float)
    k = len(m)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    size = min(9.0, 3.0 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    names = [n[:14] for n in conf["names"]]
    if k <= 20:
        ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
        for i in range(k):
            for j in range(k):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    label = "true label (clean test)" if conf["split"] == "test" else "given label (noisy validation)"
    ax.set_ylabel(label)
    ax.set_xlabel("predicted label")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    return _uri(fig)
