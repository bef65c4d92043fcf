"""D-SINK against every row of ``dsink run`` across training regimes (issue 32): does it hold beyond the MLP recipe?

Rows (the same in every regime): CE and RoLT (the dedicated long-tailed noisy-label method, as a baseline; its
warm-up scaled to a third of the epochs, as in benchmarks/claims.py), f_L, f_N, their prediction average, ``kd``
(that average distilled) and D-SINK. Every regime runs each seed as both the training and the data seed
(``pipeline.vary_data_seed``), so the spread includes the draw of the subsample, the noise and the split.

Regimes (Fashion-MNIST-LT rho = 100, 40 % uniform_excl_true noise unless named otherwise):

* ``mlp``: the offline default's recipe (``dsink.pipeline.CPU_RECIPE``; MLP, Adam 1e-3, 15 epochs, full data);
* ``cnn``: small CNN from scratch with augmentation, SGD + cosine, 30 epochs on n_max 1200 (recipes.CNN, the
  recipe of ``benchmarks/claims.py --recipe cnn``);
* ``features``: frozen features (``dsink embed`` of a "pretrained" ResNet-18) then the MLP recipe on the .npz -
  routes.py's features route on its photo folder (rho 20, 30 % noise, n_max 600, a folder per seed);
* ``finetune``: end-to-end fine-tuning of that ResNet-18 on the same folders (routes.py's end-to-end route);
* ``tiny``: a few hundred images (n_max 200, about 500 images), 3 epochs, small CNN, batch 32;
* ``pair_bs_sce``, ``pair_ldam_elr``: the MLP recipe with (f_L, f_N) = (bs, sce) and (ldam_drw, elr);
* ``gpu`` (not in the default set): ResNet-32 on CIFAR-shaped data (benchmarks/cifar_shaped.py), the
  CIFAR-10-LT recipe shortened to 12 epochs, needs ``--device cuda``; run by benchmarks/gpu_check.sh.

Summary per regime: D-SINK's top-1 at the last epoch and at the selected checkpoint (best noisy-validation
accuracy; no choice is made on the test split) minus the best other row and minus the better of its own two
auxiliaries, in points; the issue's criterion: within 0.5 point of the best other row at both checkpoints and
never more than 1 point below the better auxiliary.

``--quick`` (fewer epochs, smaller data) writes regimes_quick.json; ``--smoke`` (one epoch on tiny data) exists
for the tests. Every model is cached in ``--work`` (``dsink run``'s cache), so an interrupted run resumes and a
variant (``--set KEY=VALUE``, named by ``--variant``) retrains only what the setting changes.

Usage: python benchmarks/regimes.py [--regimes mlp cnn ...] [--seeds 0 1 2] [--quick | --smoke]
       [--set KEY=VALUE ...] [--variant NAME] [--device cpu] [--work runs/regimes] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path


from dsink.pipeline import load_pipeline, metric_stats, results_markdown, run_pipeline
from dsink.runs import RunDir

import routes  # benchmarks/routes.py: the photo folder, the pretrained backbone, the CLI wrapper
from recipes import RECIPES  # benchmarks/recipes.py

RESULTS = Path(__file__).parent / "results"
DEFAULT = ["mlp", "cnn", "features", "finetune", "tiny", "pair_bs_sce", "pair_ldam_elr"]
SIZES = ("full", "quick", "smoke")
PER_SEED = ("top1", "top1_best_val", "few_acc", "many_acc", "correction_rate")
BEST_GAP, AUX_GAP = 0.005, 0.01  # the criterion, as fractions: 0.5 and 1 point
CIFAR_CONFIG = Path(__file__).parents[1] / "configs" / "cifar10_lt100_uniform40.yaml"

# Smaller data and fewer epochs: quick for a look, smoke for the tests. rho 10 in smoke keeps every class
# non-empty at n_max 60.
SHRINK = {"quick": {"mlp": ["optim.epochs=8", "data.n_max=1500"], "cnn": ["optim.epochs=10", "data.n_max=600"]},
          "smoke": {"mlp": ["optim.epochs=1", "data.n_max=60", "data.imbalance_ratio=10"],
                    "cnn": ["optim.epochs=1", "data.n_max=60", "data.imbalance_ratio=10"]}}
TINY = RECIPES["cnn"] + ["data.n_max=200", "optim.epochs=3", "optim.batch_size=32"]
PAIRS = {"pair_bs_sce": ("bs", "sce"), "pair_ldam_elr": ("ldam_drw", "elr")}
# The photo folder of the features and finetune regimes: routes.py's defaults (full), smaller for quick/smoke.
FOLDER = {"full": {"rho": 20, "noise": 0.3, "n_max": 600, "n_test": 200, "e2e_epochs": 8, "mlp_epochs": 15},
          "quick": {"rho": 20, "noise": 0.3, "n_max": 200, "n_test": 50, "e2e_epochs": 3, "mlp_epochs": 8},
          "smoke": {"rho": 10, "noise": 0.3, "n_max": 40, "n_test": 10, "e2e_epochs": 1, "mlp_epochs": 1}}
# The CIFAR-shaped GPU case: gpu_check.sh's shortened CIFAR-10-LT recipe (12 epochs, decays at 8 and 10).
GPU = {"full": {"per_class": 5000, "over": ["optim.epochs=12", "optim.milestones=[8,10]", "optim.warmup_epochs=1"]},
       "quick": {"per_class": 5000, "over": ["optim.epochs=4", "optim.milestones=[3]", "optim.warmup_epochs=1"]},
       "smoke": {"per_class": 60, "over": ["optim.epochs=1", "data.imbalance_ratio=10", "optim.milestones=[1]", "optim.warmup_epochs=0",
                                           "model.width=4"]}}
WHAT = {
    "mlp": "MLP recipe (offline default): Fashion-MNIST-LT rho 100, 40 % uniform_excl_true, Adam 1e-3, 15 epochs",
    "cnn": "small CNN from scratch, augmentation, SGD + cosine, 30 epochs, n_max 1200 (recipes.CNN)",
    "features": "frozen ResNet-18 features (dsink embed) + MLP recipe on routes.py's photo folder",
    "finetune": "end-to-end fine-tuning of the pretrained ResNet-18 on routes.py's photo folder",
    "tiny": "small CNN, n_max 200 (about 500 images), 3 epochs, batch 32",
    "pair_bs_sce": "MLP recipe, f_L = bs, f_N = sce",
    "pair_ldam_elr": "MLP recipe, f_L = ldam_drw, f_N = elr",
    "gpu": "ResNet-32 on CIFAR-shaped data, CIFAR-10-LT recipe shortened to 12 epochs (CUDA)",
}


def rows_over() -> list[str]:
    """The rows of every regime: CE and RoLT as baselines, f_L = LA, f_N = GCE, the average, kd, D-SINK."""
    return ["pipeline.imbalance.name=la", "pipeline.noise.name=gce", 'pipeline.baselines=["ce","rolt"]',
            'pipeline.combined=["average","kd"]']


def recipe_over(name: str, size: str) -> list[str]:
    """Overrides of a regime trained straight from Fashion-MNIST (mlp, cnn, tiny, the pairs)."""
    if name == "tiny":  # already tiny: quick is the full regime
        return rows_over() + TINY + (SHRINK["smoke"]["cnn"] if size == "smoke" else [])
    recipe = "cnn" if name == "cnn" else "mlp"
    over = rows_over() + RECIPES[recipe] + SHRINK.get(size, {}).get(recipe, [])
    if name in PAIRS:
        fl, fn = PAIRS[name]
        over += [f"pipeline.imbalance.name={fl}", f"pipeline.noise.name={fn}"]
    return over


def with_rolt_warmup(base, pipe) -> None:
    """RoLT's warm-up counts epochs of a 200-epoch schedule; give it a third of this one (claims.py's 5 of 15),
    unless the command line set it."""
    if "rolt" in pipe.baselines + pipe.combined:
        pipe.params.setdefault("rolt", {}).setdefault("warmup_epochs", max(1, base.optim.epochs // 3))


def seeds_list(seeds: list[int]) -> str:
    return "[" + ",".join(map(str, seeds)) + "]"


def pipeline_once(over: list[str], ctx: dict, tag: str, seeds: list[int], config: Path | None = None) -> dict:
    """One ``dsink run`` pipeline (``run_pipeline``) with the rows, the seeds as data seeds, the cache and the
    command line's --set on top."""
    work = ctx["work"]
    common = [f"pipeline.seeds={seeds_list(seeds)}", "pipeline.vary_data_seed=true",
              f"pipeline.cache_dir={work / 'cache'}", f"pipeline.out={work / 'pipelines' / ctx['variant'] / tag}"]
    device = [f"train.device={ctx['device']}"] if ctx["device"] else []
    base, pipe = load_pipeline(config, over + common + device + ctx["sets"])
    with_rolt_warmup(base, pipe)
    return run_pipeline(base, pipe, progress=False, on_job=lambda i, n, j: print(
        f"  [{tag}] {i + 1}/{n} {j.label} seed {j.seed}", file=sys.stderr, flush=True))


def setting_of(over: list[str], config: Path | None, ctx: dict) -> dict:
    """The data/model/optimiser facts of a regime, read back from its resolved config."""
    device = [f"train.device={ctx['device']}"] if ctx["device"] else []
    base, pipe = load_pipeline(config, over + device + ctx["sets"])
    with_rolt_warmup(base, pipe)
    d, m, o = base.data, base.model, base.optim
    return {"dataset": d.dataset, "imbalance_ratio": d.imbalance_ratio, "noise_mode": d.noise_mode,
            "noise_rate": d.noise_rate, "n_max": d.n_max, "model": m.name, "optimizer": o.optimizer, "lr": o.lr,
            "epochs": o.epochs, "batch_size": o.batch_size, "augment": base.train.augment,
            "f_L": pipe.imbalance.name, "f_N": pipe.noise.name, "baselines": pipe.baselines,
            "combined": pipe.combined, "params": pipe.params, "target": pipe.target, "overrides": over + ctx["sets"]}


def merge_rows(results: list[dict]) -> list[dict]:
    """One row per method over one or several pipelines' results (a folder regime runs a pipeline per seed):
    means and stds as in ``dsink run``'s results.json, recomputed from the runs' stored evaluations, and the
    per-seed values of the main metrics."""
    order, runs, seeds, roles = [], {}, {}, {}
    for res in results:
        for r in res["rows"]:
            if r["method"] not in runs:
                order.append(r["method"])
                runs[r["method"]], seeds[r["method"]], roles[r["method"]] = [], [], r["role"]
            runs[r["method"]] += r["runs"]
            seeds[r["method"]] += r["seeds"]
    rows = []
    for m in order:
        reports = [RunDir(run).read_eval() for run in runs[m]]
        row = {"method": m, "role": roles[m], "seeds": seeds[m], "runs": runs[m], **metric_stats(reports)}
        row["per_seed"] = {k: [metric_stats([rep])[k] for rep in reports] for k in PER_SEED}
        rows.append(row)
    return rows


def summary(rows: list[dict]) -> dict:
    """D-SINK minus the best other row and minus the better auxiliary, in points, at the last epoch (top1)
    and the selected checkpoint (top1_best_val); and whether the issue's criterion holds."""
    target = next(r for r in rows if r["role"] == "target")
    others = [r for r in rows if r["role"] not in ("target", "paper")]
    aux = [r for r in rows if r["role"] in ("imbalance", "noise")]
    out: dict = {"dsink": {}, "best_other": {}, "dsink_minus_best_other": {}, "better_aux": {},
                 "dsink_minus_better_aux": {}}
    for key in ("top1", "top1_best_val"):
        best = max((r for r in others if r[key] is not None), key=lambda r: r[key])
        better = max((r for r in aux if r[key] is not None), key=lambda r: r[key])
        out["dsink"][key] = 100 * target[key]
        out["best_other"][key] = best["method"]
        out["dsink_minus_best_other"][key] = 100 * (target[key] - best[key])
        out["better_aux"][key] = better["method"]
        out["dsink_minus_better_aux"][key] = 100 * (target[key] - better[key])
    out["within_half_point_of_best"] = all(v >= -100 * BEST_GAP - 1e-9 for v in out["dsink_minus_best_other"].values())
    out["at_most_one_point_below_aux"] = all(v >= -100 * AUX_GAP - 1e-9 for v in out["dsink_minus_better_aux"].values())
    out["criterion_met"] = out["within_half_point_of_best"] and out["at_most_one_point_below_aux"]
    return out


def run_recipe(name: str, ctx: dict) -> tuple[list[dict], dict]:
    """mlp, cnn, tiny and the pairs: one pipeline over all seeds."""
    over = recipe_over(name, ctx["size"])
    return [pipeline_once(over, ctx, name, ctx["seeds"])], setting_of(over, None, ctx)


def photo_folders(ctx: dict) -> tuple[Path, list[tuple[int, Path, dict]]]:
    """routes.py's pretrained ResNet-18 and its long-tailed noisy photo folder, one per seed (the data seed)."""
    f = FOLDER[ctx["size"]]
    work = ctx["work"] / f"routes-{ctx['size']}"
    work.mkdir(parents=True, exist_ok=True)
    weights, used = routes.pretrained_backbone(work, ctx["size"] != "full")
    folders = []
    for seed in ctx["seeds"]:
        root = work / f"folder-rho{f['rho']:g}-n{f['noise']:g}-m{f['n_max']}-s{seed}"
        folders.append((seed, root, routes.make_folder(root, used, f["rho"], f["noise"], f["n_max"], f["n_test"], seed)))
    return weights, folders


def image_over(root: Path) -> list[str]:
    # the folder's labels are already long-tailed and noisy: no further subsampling or noise
    return ["data.dataset=image_folder", f"data.root={root}", "data.image_size=28", "data.noise_mode=none",
            "data.imbalance_ratio=1"]


def run_features(name: str, ctx: dict) -> tuple[list[dict], dict]:
    """``dsink embed`` of each seed's folder with the frozen backbone, then the MLP recipe on the .npz."""
    weights, folders = photo_folders(ctx)
    f, results, over = FOLDER[ctx["size"]], [], []
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    for seed, root, _ in folders:
        feats = root.parent / f"features-{root.name}.npz"
        if not feats.is_file():  # the embedding of a folder does not change: reused when the run resumes
            sets = image_over(root) + ["model.name=resnet18", f"model.pretrained={weights}",
                                       f"train.device={ctx['device'] or 'cpu'}", f"data.data_seed={seed}"]
            routes._dsink("embed", *[a for s in sets for a in ("--set", s)], "-q", "--out", str(feats), env=env)
        over = rows_over() + RECIPES["mlp"] + [f"optim.epochs={f['mlp_epochs']}", "data.dataset=npz",
                                               f"data.root={feats}", "data.noise_mode=none", "data.imbalance_ratio=1"]
        results.append(pipeline_once(over, ctx, f"{name}-s{seed}", [seed]))
    return results, {**setting_of(over, None, ctx), **folder_facts(folders, ctx["size"])}


def run_finetune(name: str, ctx: dict) -> tuple[list[dict], dict]:
    """routes.py's end-to-end route: the pretrained ResNet-18 fine-tuned on each seed's folder."""
    weights, folders = photo_folders(ctx)
    f, results, over = FOLDER[ctx["size"]], [], []
    for seed, root, _ in folders:
        over = rows_over() + image_over(root) + [
            "model.name=resnet18", f"model.pretrained={weights}", "optim.optimizer=sgd", "optim.lr=0.01",
            "optim.schedule=cosine", "optim.batch_size=64", "train.augment=true", f"optim.epochs={f['e2e_epochs']}"]
        results.append(pipeline_once(over, ctx, f"{name}-s{seed}", [seed]))
    return results, {**setting_of(over, None, ctx), **folder_facts(folders, ctx["size"])}


def folder_facts(folders: list, size: str) -> dict:
    """The photo folders' own long tail and noise (the pipelines see them as given labels)."""
    f = FOLDER[size]
    return {"folder": {"rho": f["rho"], "noise_rate": f["noise"], "noise_mode": "uniform_excl_true",
                       "n_max": f["n_max"], "n_test_per_class": f["n_test"],
                       "per_seed": {str(s): facts for s, _, facts in folders}},
            "note": "one photo folder per seed (routes.make_folder); data.* above describe the folder as read"}


def run_gpu(name: str, ctx: dict) -> tuple[list[dict], dict]:
    """ResNet-32, the CIFAR-10-LT recipe shortened, on CIFAR-shaped Fashion-MNIST (benchmarks/cifar_shaped.py)."""
    import torch

    device = ctx["device"] or "cuda"
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("regime gpu needs a CUDA device and torch.cuda.is_available() is False here; run it on a GPU "
                 "machine (benchmarks/gpu_check.sh) or pass --device cpu with --smoke to try the code path")
    g = GPU[ctx["size"]]
    root = ctx["work"] / f"cifar-shaped-{g['per_class']}"
    if not (root / "cifar-10-batches-py" / "test_batch").is_file():
        subprocess.run([sys.executable, str(Path(__file__).parent / "cifar_shaped.py"), str(root),
                        "--per-class", str(g["per_class"])], check=True)
    over = rows_over() + g["over"] + [f"data.root={root}", "data.download=false", f"train.device={device}"]
    return [pipeline_once(over, ctx, name, ctx["seeds"], CIFAR_CONFIG)], setting_of(over, CIFAR_CONFIG, ctx)


RUNNERS = {"features": run_features, "finetune": run_finetune, "gpu": run_gpu}


def variant_name(sets: list[str]) -> str:
    """``default``, or the --set values in short (``class_totals=auto``) for a variant left unnamed."""
    if not sets:
        return "default"
    return "+".join(re.sub(r"[^A-Za-z0-9_.=-]+", "_", s.split("=", 1)[0].split(".")[-1] + "=" + s.split("=", 1)[1])
                    for s in sets)


def regime_table(report: dict) -> str:
    lines = ["| regime | D-SINK top-1 (last / sel.) | best other (last) | - best other (last / sel.) "
             "| - better aux (last / sel.) | criterion | s |", "|---|---|---|---|---|---|---:|"]
    for name, r in report["regimes"].items():
        s = r["summary"]
        pair = lambda d: f"{d['top1']:+.2f} / {d['top1_best_val']:+.2f}"  # noqa: E731
        lines.append(f"| {name} | {s['dsink']['top1']:.2f} / {s['dsink']['top1_best_val']:.2f} | "
                     f"{s['best_other']['top1']} | {pair(s['dsink_minus_best_other'])} | "
                     f"{pair(s['dsink_minus_better_aux'])} | {'met' if s['criterion_met'] else 'not met'} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regimes", nargs="+", choices=DEFAULT + ["gpu"], default=DEFAULT,
                    help="regimes to run (default: all but gpu)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="seeds; each is the training seed and the data seed (default 0 1 2)")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer epochs, smaller data (regimes_quick.json)")
    size.add_argument("--smoke", action="store_true", help="one epoch on tiny data, for the tests")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override passed to every pipeline, e.g. pipeline.target.class_totals=auto (a variant)")
    ap.add_argument("--variant", default=None, help="name of the variant in the JSON (default: from --set)")
    ap.add_argument("--device", default=None, help="train.device of every model (default: the config's; gpu: cuda)")
    ap.add_argument("--work", default="runs/regimes", help="cache of the trained models (a rerun resumes)")
    ap.add_argument("--out", default=None, help="JSON (default benchmarks/results/regimes[_quick|_smoke][_VARIANT].json)")
    return ap.parse_args()


def main() -> int:
    args = parse()
    size = "quick" if args.quick else "smoke" if args.smoke else "full"
    variant = args.variant or variant_name(args.sets)
    stem = "regimes" + ("" if size == "full" else f"_{size}") + ("" if variant == "default" else f"_{variant}")
    out = Path(args.out or RESULTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', stem)}.json")
    ctx = {"size": size, "seeds": args.seeds, "sets": args.sets, "device": args.device, "variant": variant,
           "work": Path(args.work) / size}
    import torch

    report = {"regimes": {}, "machine": {"machine": platform.machine(), "cpus": os.cpu_count(),
                                         "python": platform.python_version(), "torch": torch.__version__,
                                         "threads": torch.get_num_threads(), "device": args.device},
              "command": "python " + " ".join(sys.argv), "size": size, "seeds": args.seeds,
              "variant": {"name": variant, "set": args.sets},
              "criterion": "D-SINK within 0.5 point of the best other row at the last epoch and at the selected "
                           "checkpoint, and never more than 1 point below the better of f_L and f_N"}
    for name in args.regimes:
        t = time.time()
        results, setting = RUNNERS.get(name, run_recipe)(name, ctx)
        rows = merge_rows(results)
        report["regimes"][name] = {"rows": rows, "setting": {"what": WHAT[name], **setting},
                                   "summary": summary(rows), "seconds": time.time() - t,
                                   "pipelines": [r["pipeline_dir"] for r in results]}
        print(f"\n## {name}: {WHAT[name]}  ({time.time() - t:.0f} s)\n")
        print(results_markdown({"rows": rows, "metrics": results[0]["metrics"]}))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))  # after each regime: an interrupted run keeps what it has
    print(f"\n## Regimes (variant {variant}, seeds {args.seeds}; points)\n\n{regime_table(report)}\n\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
