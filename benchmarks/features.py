"""The features route against the tools people use instead: DSinkClassifier vs scikit-learn's logistic
regression (plain and class-balanced) and cleanlab's CleanLearning around it, on features with long-tailed
noisy labels.

Features: a small CNN (dsink's ``small_cnn``) trained for a few epochs on a clean, balanced 10k subset A of the
Fashion-MNIST training set; its penultimate features of the other 50k training images (B) and of the test set.
Settings: long-tailed, noisy label sets drawn from B with dsink's own protocol (``dsink.data.make_labels``:
subsample by true label, inject noise), each seed its own data seed; test: the balanced clean test set.
Metrics: top-1 on the balanced test set (= balanced accuracy), few-shot accuracy (mean per-class accuracy of
the few-shot classes by training size) and fit time. No choice is made on the test split.

Usage: python benchmarks/features.py [--quick] [--seeds 0 1 2] [--out benchmarks/results/features.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

SETTINGS = [(100, "uniform_excl_true", 0.4), (20, "semantic", 0.3)]  # (rho, noise mode, noise rate)


def features(work: Path, quick: bool) -> dict[str, np.ndarray]:
    """Penultimate features of a small CNN trained on a clean balanced subset A (cached in ``work``)."""
    cache = work / f"fmnist_small_cnn{'_quick' if quick else ''}.npz"
    if cache.is_file():
        return dict(np.load(cache))
    import torch

    from dsink.config import load_config
    from dsink.data import build_data, load_fashion_mnist
    from dsink.runs import RunDir
    from dsink.train import Trainer, train_run

    over = ["data.dataset=fashion_mnist", "data.imbalance_ratio=1", f"data.n_max={300 if quick else 1000}",
            "data.noise_mode=none", "data.data_seed=123", "data.val_fraction=0", "model.name=small_cnn",
            f"optim.epochs={2 if quick else 5}", "optim.lr=0.05", "train.device=cpu", f"data.cache_dir={work}"]
    cfg = load_config(None, over)
    run = work / f"extractor{'_quick' if quick else ''}"
    if not RunDir(run).has_eval():
        train_run(cfg, run, force=True)
    data = build_data(cfg.data)
    trainer = Trainer(cfg, data, run)
    trainer.load_weights("last")
    net = trainer.models["net"].eval()
    src = load_fashion_mnist()
    rest = np.setdiff1d(np.arange(len(src.train_labels)), data.train_index)

    def embed(x):
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), 2048):
                out.append(net.features(trainer.pipeline(torch.from_numpy(x[i : i + 2048]))).float().numpy())
        return np.concatenate(out)

    arrays = {"X": embed(src.train_x[rest]), "y_true": src.train_labels[rest], "X_test": embed(src.test_x),
              "y_test": src.test_labels}
    np.savez(cache, **arrays)
    return arrays


def few_shot(pred, y, counts) -> float:
    from dsink.eval.metrics import per_class_accuracy, shot_groups

    pc = per_class_accuracy(pred, y, len(counts))
    few = shot_groups(counts)["few"]
    return float(np.nanmean(pc[few])) if len(few) else float("nan")


def classifiers(seed: int, quick: bool):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from dsink import DSinkClassifier

    def lr(**kw):
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed, **kw))

    out = {"logistic regression": lr, "logistic regression (balanced)": lambda: lr(class_weight="balanced")}
    try:
        from cleanlab.classification import CleanLearning

        out["cleanlab CleanLearning (LR)"] = lambda: CleanLearning(lr(), seed=seed)
    except ImportError:
        print("cleanlab is not installed (pip install cleanlab): its row is skipped", file=sys.stderr)
    out["DSinkClassifier"] = lambda: DSinkClassifier(random_state=seed, **({"epochs": 8} if quick else {}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="small extractor, 1 seed")
    ap.add_argument("--work", default=None, help="cache folder (default $DSINK_CACHE/bench-features)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from dsink.config import DataConfig
    from dsink.data import make_labels
    from dsink.data.sources import default_cache_dir

    seeds = args.seeds[:1] if args.quick else args.seeds
    work = Path(args.work) if args.work else default_cache_dir() / "bench-features"
    work.mkdir(parents=True, exist_ok=True)
    f = features(work, args.quick)
    rows = []
    for rho, mode, rate in SETTINGS:
        for seed in seeds:
            cfg = DataConfig(imbalance_ratio=rho, noise_mode=mode, noise_rate=rate, data_seed=seed, val_fraction=0.0,
                             n_max=1500 if args.quick else None)
            ls = make_labels(f["y_true"], 10, cfg, class_map="fashion_mnist" if mode == "semantic" else None)
            X, y, true = f["X"][ls.indices], ls.noisy, ls.true
            counts = np.bincount(true, minlength=10)
            for name, make in classifiers(seed, args.quick).items():
                t0 = time.perf_counter()
                clf = make().fit(X, y)
                fit_s = time.perf_counter() - t0
                pred = np.asarray(clf.predict(f["X_test"]))
                rows.append({"setting": f"rho {rho}, {mode} {rate}", "seed": seed, "method": name, "fit_s": fit_s,
                             "top1": float((pred == f["y_test"]).mean()), "few": few_shot(pred, f["y_test"], counts),
                             "n_train": int(len(y)), "noise": float((y != true).mean())})
                print(f"{rows[-1]['setting']:<28} seed {seed} {name:<32} top-1 {100 * rows[-1]['top1']:6.2f}  "
                      f"few {100 * rows[-1]['few']:6.2f}  fit {fit_s:6.1f} s", flush=True)
    table = summary(rows)
    print("\n" + table)
    out = Path(args.out or f"benchmarks/results/features{'_quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python " + " ".join(sys.argv), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version()}
    out.write_text(json.dumps({"meta": meta, "rows": rows, "table": table}, indent=2))
    print(f"wrote {out}")
    return 0


def summary(rows) -> str:
    lines = ["| setting | method | top-1 (balanced) | few-shot | fit time (s) |", "|---|---|---|---|---|"]
    keys = list(dict.fromkeys((r["setting"], r["method"]) for r in rows))
    for setting, method in keys:
        rs = [r for r in rows if r["setting"] == setting and r["method"] == method]

        def ms(k, scale=100.0):
            v = np.array([r[k] for r in rs], dtype=float) * scale
            return f"{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0:.2f}"

        lines.append(f"| {setting} | {method} | {ms('top1')} | {ms('few')} | {ms('fit_s', 1.0)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
