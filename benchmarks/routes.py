"""Which route for a photo folder: features + D-SINK (``dsink embed`` then ``dsink run`` on the .npz) against
end-to-end fine-tuning (``dsink run`` on the folder), same folder, same pretrained backbone, same rows.

The folder: Fashion-MNIST images written as files the way a practitioner has them - mixed sizes (28-56 px),
grey PNGs and RGB JPEGs - with long-tailed noisy labels in ``DIR/train/<label>/`` (dsink's own protocol,
``dsink.data.make_labels``: rho ``--rho``, ``--noise`` of ``uniform_excl_true`` noise, largest class
``--n-max``) and a clean balanced ``DIR/test/<class>/`` (``--n-test`` per class). No ImageNet weights can be
downloaded here, so the "pretrained" backbone is a ResNet-18 trained (CE, 3 epochs) on a disjoint clean,
balanced 10k subset of the Fashion-MNIST training set, saved as a torchvision state dict and given to both
routes as ``model.pretrained=FILE`` (a stand-in for ImageNet weights on a user's machine).

* features: ``dsink embed`` (frozen ResNet-18, one pass) -> ``dsink run --set data.dataset=npz
  --set model.name=mlp`` (the offline default's MLP recipe: Adam 1e-3, 15 epochs);
* end-to-end: ``dsink run --set data.dataset=image_folder --set model.name=resnet18 --set model.pretrained=FILE``
  (SGD 0.01, momentum 0.9, cosine, ``--e2e-epochs`` epochs, backbone at 0.1x the head's learning rate).

Both report the same rows (CE, f_L = LA, f_N = GCE, their average, kd, D-SINK) on the clean test folder, and
the wall time of each route (embedding included). All commands are the CLI a user types (subprocesses).

Usage: python benchmarks/routes.py [--quick] [--seeds 0] [--work DIR] [--out benchmarks/results/routes.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def _dsink(*args: str, env: dict) -> float:
    """Run the dsink CLI; returns its wall time (s)."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "dsink", *args]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0


def pretrained_backbone(work: Path, quick: bool) -> tuple[Path, np.ndarray]:
    """A ResNet-18 trained on a clean balanced Fashion-MNIST subset (state dict, torchvision keys) and the
    training indices it used (kept out of the folder)."""
    import torch

    from dsink.config import load_config
    from dsink.data import build_data
    from dsink.train import Trainer, train_run

    out = work / "resnet18_fmnist.pt"
    over = ["data.dataset=fashion_mnist", "data.imbalance_ratio=1", f"data.n_max={200 if quick else 1000}",
            "data.noise_mode=none", "data.data_seed=123", "data.val_fraction=0", "model.name=resnet18",
            f"optim.epochs={1 if quick else 3}", "optim.lr=0.05", "optim.schedule=cosine", "train.device=cpu",
            f"data.cache_dir={work / 'cache'}"]
    cfg = load_config(None, over)
    data = build_data(cfg.data)
    if not out.is_file():
        run = work / "pretrain"
        train_run(cfg, run, force=True)
        trainer = Trainer(cfg, data, run)
        trainer.load_weights("last")
        net = trainer.models["net"]
        sd = {k[len("backbone."):]: v for k, v in net.state_dict().items() if k.startswith("backbone.")}
        torch.save(sd, out)
    return out, np.asarray(data.train_index)


def make_folder(root: Path, used: np.ndarray, rho: float, noise: float, n_max: int, n_test: int, seed: int) -> dict:
    """The long-tailed noisy training folder and the clean test folder (skipped when ``root`` is complete)."""
    from PIL import Image

    from dsink.config import DataConfig
    from dsink.data import load_fashion_mnist
    from dsink.data.builder import make_labels

    done = root / ".complete"
    if done.is_file():
        return json.loads(done.read_text())
    src = load_fashion_mnist()
    rest = np.setdiff1d(np.arange(len(src.train_labels)), used)
    cfg = DataConfig(imbalance_ratio=rho, n_max=n_max, noise_mode="uniform_excl_true", noise_rate=noise,
                     data_seed=seed, val_fraction=0)
    ls = make_labels(src.train_labels[rest], src.num_classes, cfg)
    names = [c.replace("/", "-").replace(" ", "_").lower() for c in src.class_names]
    rng = np.random.default_rng([seed, 7])

    def write(img: np.ndarray, path: Path) -> None:
        side = int(rng.integers(28, 57))
        im = Image.fromarray(img.reshape(28, 28)).resize((side, side), Image.BILINEAR)
        path.parent.mkdir(parents=True, exist_ok=True)
        if rng.random() < 0.5:
            im.save(path.with_suffix(".png"))
        else:
            im.convert("RGB").save(path.with_suffix(".jpg"), quality=90)

    for j, (i, y) in enumerate(zip(rest[ls.indices], ls.noisy)):
        write(src.train_x[i], root / "train" / names[y] / f"{j:06d}")
    test_idx = np.concatenate([np.flatnonzero(src.test_labels == c)[:n_test] for c in range(src.num_classes)])
    for j, i in enumerate(test_idx):
        write(src.test_x[i], root / "test" / names[src.test_labels[i]] / f"{j:06d}")
    facts = {"train": int(len(ls.indices)), "test": int(len(test_idx)), "counts": [int(c) for c in ls.counts],
             "noise_realised": float(np.mean(ls.noisy != ls.true))}
    done.write_text(json.dumps(facts))
    return facts


ROWS = ("ce", "la", "gce", "average", "kd", "dsink")


def rows_of(results: Path) -> dict[str, dict]:
    res = json.loads(results.read_text())
    out = {}
    for r in res["rows"]:
        role = {"target": "dsink", "imbalance": "la", "noise": "gce"}.get(r["role"])
        key = role or r["method"].split(" ")[0]  # "average (f_L + f_N)" -> average
        out[key] = {k: r.get(k) for k in ("top1", "top1_best_val", "few_acc", "many_acc", "correction_rate")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: a small folder, 1-epoch models")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="data and training seeds")
    ap.add_argument("--rho", type=float, default=20)
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--n-max", type=int, default=600)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--image-size", type=int, default=28)
    ap.add_argument("--e2e-epochs", type=int, default=8)
    ap.add_argument("--work", default=None, help="default $DSINK_CACHE/bench-routes")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from dsink.data.sources import default_cache_dir

    work = Path(args.work or default_cache_dir() / f"bench-routes{'-quick' if args.quick else ''}").expanduser()
    work.mkdir(parents=True, exist_ok=True)
    n_max, n_test = (120, 30) if args.quick else (args.n_max, args.n_test)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    weights, used = pretrained_backbone(work, args.quick)
    common = ["--set", "data.noise_mode=none", "--set", "data.imbalance_ratio=1", "--set", "train.device=cpu", "-q"]
    report: dict = {"meta": {"command": "python " + " ".join(sys.argv), "cpus": os.cpu_count(),
                             "machine": platform.machine(), "python": platform.python_version()},
                    "settings": {**vars(args), "n_max": n_max, "n_test": n_test}, "seeds": {}}
    for seed in args.seeds:
        folder = work / f"folder-rho{args.rho:g}-n{args.noise:g}-m{n_max}-s{seed}"
        facts = make_folder(folder, used, args.rho, args.noise, n_max, n_test, seed)
        img = ["--set", "data.dataset=image_folder", "--set", f"data.root={folder}",
               "--set", f"data.image_size={args.image_size}", "--set", f"data.data_seed={seed}"]
        feats = work / f"features-s{seed}.npz"
        t_embed = _dsink("embed", *img, *common, "--set", "model.name=resnet18", "--set", f"model.pretrained={weights}",
                         "--out", str(feats), env=env)
        out_f, out_e = work / f"run-features-s{seed}", work / f"run-e2e-s{seed}"
        t_feat = _dsink("run", *common, "--set", "data.dataset=npz", "--set", f"data.root={feats}",
                        "--set", f"data.data_seed={seed}", "--set", "model.name=mlp", "--set", "optim.optimizer=adam",
                        "--set", "optim.lr=0.001", "--set", "optim.schedule=constant",
                        "--epochs", "1" if args.quick else "15", "--seeds", str(seed), "--out", str(out_f), env=env)
        t_e2e = _dsink("run", *img, *common, "--set", "model.name=resnet18", "--set", f"model.pretrained={weights}",
                       "--set", "optim.optimizer=sgd", "--set", "optim.lr=0.01", "--set", "optim.schedule=cosine",
                       "--set", "optim.batch_size=64", "--set", "train.augment=true",
                       "--epochs", "1" if args.quick else str(args.e2e_epochs), "--seeds", str(seed),
                       "--out", str(out_e), env=env)
        report["seeds"][str(seed)] = {
            "folder": facts,
            "features": {"seconds": t_embed + t_feat, "embed_seconds": t_embed, "rows": rows_of(out_f / "results.json")},
            "end_to_end": {"seconds": t_e2e, "rows": rows_of(out_e / "results.json")},
        }
    print(table(report))
    out = Path(args.out) if args.out else RESULTS / f"routes{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")


def table(report: dict) -> str:
    seeds = list(report["seeds"].values())
    lines = ["| route | time, s | " + " | ".join(ROWS) + " |", "|---|---:|" + "---:|" * len(ROWS)]
    for route in ("features", "end_to_end"):
        secs = np.mean([s[route]["seconds"] for s in seeds])
        cells = []
        for row in ROWS:
            vals = [s[route]["rows"].get(row, {}).get("top1") for s in seeds]
            vals = [v for v in vals if v is not None]
            cells.append(f"{100 * np.mean(vals):.2f}" if vals else "-")
        lines.append(f"| {route.replace('_', '-')} | {secs:.0f} | " + " | ".join(cells) + " |")
    return "Top-1 (%) on the clean test folder, last epoch, mean over seeds\n\n" + "\n".join(lines)


if __name__ == "__main__":
    main()
