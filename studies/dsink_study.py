"""D-SINK variants and the ablation ladder across settings and data seeds (issue: D-SINK must earn its place).

For every setting and seed (the seed is the data seed *and* the training seed) this trains, through
``dsink.pipeline.run_pipeline`` and one shared cache, CE, f_L (LA), f_N (GCE), their average and ``kd``, then
each named D-SINK variant (a set of ``method.params``) and each ladder rung. Per run it records the last
epoch's test top-1, many/medium/few, label correction, the accuracy of argmax Q against the true training
labels, and the per-epoch curves (test accuracy, noisy validation accuracy and its class-balanced version),
so that selection rules can be compared afterwards. Test numbers are recorded, never used to choose.

Usage: python studies/dsink_study.py --settings dev|held_out|fresh|confirm|NAME... [--seeds 1 2] [--variants NAME ...]
       [--recipe mlp|cnn] [--noise gce|elr|...] [--work runs/study] [--out studies/results/dsink_study.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from dsink.pipeline import load_pipeline, run_pipeline
from dsink.runs import RunDir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from recipes import RECIPES  # noqa: E402  benchmarks/recipes.py, the recipes the benchmarks share
from selection import RULES  # noqa: E402  studies/selection.py

# (name, rho, noise mode, noise rate). dev: where variants were developed; held_out: only run to confirm.
SETTINGS = {
    "r100-unif40": (100, "uniform_excl_true", 0.4),
    "r10-unif40": (10, "uniform_excl_true", 0.4),
    "r50-csp30": (50, "class_size_prop", 0.3),
    "r20-pair30": (20, "pair_random", 0.3),
    "r100-sem20": (100, "semantic", 0.2),
    "r10-sem20": (10, "semantic", 0.2),  # with the three above: the claims grid (benchmarks/claims.py)
    "r200-incl50": (200, "uniform_incl_true", 0.5),
    "r50-unif20": (50, "uniform_excl_true", 0.2),
    "r100-pair40": (100, "pair_random", 0.4),
    "r20-sem30": (20, "semantic", 0.3),
    "r30-unif30": (30, "uniform_excl_true", 0.3),
    "r10-pair20": (10, "pair_random", 0.2),
    "r70-sem20": (70, "semantic", 0.2),
    "r150-unif30": (150, "uniform_excl_true", 0.3),
    "r40-pair25": (40, "pair_random", 0.25),
    "r15-csp40": (15, "class_size_prop", 0.4),
    "r80-unif35": (80, "uniform_excl_true", 0.35),
    "r25-sem40": (25, "semantic", 0.4),
    "r120-pair30": (120, "pair_random", 0.3),
    "r60-sem30": (60, "semantic", 0.3),
    "r90-pair35": (90, "pair_random", 0.35),
    "r35-unif30": (35, "uniform_excl_true", 0.3),
    "r12-unif25": (12, "uniform_excl_true", 0.25),
    "r45-csp35": (45, "class_size_prop", 0.35),
    "r75-sem25": (75, "semantic", 0.25),
}
# fresh: settings first run on 2026-12-03 to confirm aux_checkpoint=selected, chosen before any result was seen
GROUPS = {"dev": ["r100-unif40", "r10-unif40"], "held_out": ["r50-csp30", "r20-pair30", "r200-incl50"],
          "fresh": ["r50-unif20", "r100-pair40", "r20-sem30"],
          # confirm: settings first run on 2026-12-03 (fourth session) to confirm f_N = ELR, chosen before any result
          "confirm": ["r30-unif30", "r10-pair20", "r70-sem20"],
          # decide: chosen on 2026-12-03 (seventh session) before any run, to decide the softer-Q exploration
          "decide": ["r150-unif30", "r40-pair25", "r15-csp40"],
          # decide2: chosen on 2026-12-03 (seventh session) before any run, to decide the half-kd exploration
          "decide2": ["r80-unif35", "r25-sem40", "r120-pair30"],
          # decide3: chosen on 2026-12-04 before any run, to decide blind_vote (docs/research/rounds.md, eighth round)
          "decide3": ["r60-sem30", "r90-pair35", "r35-unif30"],
          # decide4: chosen on 2026-12-04 before any run, to decide imbalance_weight (docs/research/rounds.md, ninth round)
          "decide4": ["r12-unif25", "r45-csp35", "r75-sem25"]}
MODES = {"unif": "uniform_excl_true", "incl": "uniform_incl_true", "pair": "pair_random", "csp": "class_size_prop",
         "sem": "semantic"}


def random_settings(k: int = 24, seed: int = 20261204, first_seed: int = 100,
                    exclude: tuple[str, ...] = ()) -> dict[str, list[int]]:
    """A random sample of unseen settings, fixed before any run: rho log-uniform in [10, 200] (rounded to an
    integer), noise mode uniform over MODES, rate uniform over 20-45 % in steps of 5; no name any earlier round used
    (SETTINGS, ``exclude``); setting j (0-based) gets the data and training seeds first_seed + 3j ... + 3j + 2."""
    rng, out = np.random.default_rng(seed), {}
    modes, rates = list(MODES), [20, 25, 30, 35, 40, 45]
    while len(out) < k:
        rho = int(round(10 ** rng.uniform(1.0, np.log10(200.0))))
        name = f"r{rho}-{modes[rng.integers(len(modes))]}{rates[rng.integers(len(rates))]}"
        if name not in SETTINGS and name not in exclude and name not in out:
            j = len(out)
            out[name] = [first_seed + 3 * j + i for i in range(3)]
    return out


RANDOM10 = random_settings()  # tenth round
# eleventh round (2026-12-05), drawn before any run: the first 12 for the learning-rate schedule exploration, the
# other 12 kept unseen for a later decision
RANDOM11 = random_settings(seed=20261205, first_seed=200, exclude=tuple(RANDOM10))
GROUPS["random10"] = list(RANDOM10)
GROUPS["random11"] = list(RANDOM11)
GROUPS["random11a"] = list(RANDOM11)[:12]
GROUPS["random11b"] = list(RANDOM11)[12:]
# thirteenth round (2026-12-05), drawn before any run: the first 12 decide the thirteenth round's candidate, the
# other 12 stay unseen
RANDOM13 = random_settings(seed=20261206, first_seed=300, exclude=tuple(RANDOM10) + tuple(RANDOM11))
GROUPS["random13a"] = list(RANDOM13)[:12]
GROUPS["random13b"] = list(RANDOM13)[12:]
# fourteenth round, second session (2026-12-07), drawn before any run: the MLP check of the regimes round's defaults
RANDOM15 = random_settings(seed=20261207, first_seed=400, exclude=tuple(RANDOM10) + tuple(RANDOM11) + tuple(RANDOM13))
GROUPS["random15a"] = list(RANDOM15)[:12]
GROUPS["random15b"] = list(RANDOM15)[12:]
# fourteenth round, third session (2026-12-07), drawn before any run: the MLP check of candidate 10 (trust=collapse)
RANDOM16 = random_settings(k=12, seed=20261208, first_seed=500,
                           exclude=tuple(RANDOM10) + tuple(RANDOM11) + tuple(RANDOM13) + tuple(RANDOM15))
GROUPS["random16"] = list(RANDOM16)
GROUP_SEEDS = {**RANDOM10, **RANDOM11, **RANDOM13, **RANDOM15, **RANDOM16}  # each random setting's own seeds


def setting(name: str) -> tuple[int, str, float]:
    """(rho, noise mode, noise rate) of a setting name: SETTINGS' or any ``r<rho>-<mode><percent>`` (MODES)."""
    if name in SETTINGS:
        return SETTINGS[name]
    import re
    m = re.fullmatch(r"r(\d+)-([a-z]+?)(\d+)", name)
    if not m or m[2] not in MODES:
        raise SystemExit(f"unknown setting {name!r}: a group ({', '.join(GROUPS)}) or r<rho>-<mode><percent> with "
                         f"mode one of {', '.join(MODES)}")
    return int(m[1]), MODES[m[2]], int(m[3]) / 100


PREVIOUS = {"base_loss": "ce", "distill": "plain", "class_totals": "argmax", "cost": "noise+target",
            "target_ema": 0.0, "target_probs": "eval"}
VARIANTS = {
    # the variants below were measured (dev settings) when the defaults were the previous ones; each names what
    # it changes from those, so each spells out all of its knobs and means the same under any defaults
    "default": {},
    "selected auxiliaries": {"aux_checkpoint": "selected"},  # f_L's and f_N's probabilities at their selected checkpoint
    "kd, selected auxiliaries": {"aux_checkpoint": "selected"},  # the same for kd (variants named "kd..." train kd)
    # cheaper refreshes (the cost target of <= 1.10x a CE epoch): a looser Sinkhorn tolerance, a float32 solve, a
    # refresh every second epoch
    "tol 1e-4": {"tol": 1e-4},
    "float32 solve, tol 1e-4": {"solver_dtype": "float32", "tol": 1e-4},  # 1e-6 is below float32's error floor
    "refresh every 2": {"refresh_every": 2},
    "sinkhorn solver": {"solver": "sinkhorn"},
    "newton solver": {"solver": "newton"},  # Newton's method on the semi-dual (the same Q to ~1e-5)  # the scaling iterations instead of Newton (the default at C <= 32)
    # f out of the cost: Q = OT(f_N, f_L at the totals' prior) is solved once and stays fixed, like kd's average
    # (hypothesis: f's own predictions in the cost confirm its errors where the auxiliaries are already good)
    "f out of the cost": {"cost": "noise+imbalance"},
    # softer Q: two units of entropy per model in the cost instead of one (hypothesis: kd's edge where the
    # auxiliaries are good is its soft target; D-SINK's Q has about half the average's entropy on the training set)
    "softer Q (eps 6)": {"eps": 6.0},
    # half kd: Q = (OT-Q + (f_L + f_N) / 2) / 2 (hypothesis: the product kernel vetoes f_L's vote for a class f_N is
    # blind to, and its Q is sharper than kd's; the arithmetic mix keeps the vote, softens Q, keeps half the moves)
    "half kd (avg_mix 0.5)": {"avg_mix": 0.5},
    # blind vote: the agreeing samples of the classes f_N is blind to get kd's target (hypothesis: D-SINK's losses to
    # kd and the average come from classes f_N hardly predicts, where the product kernel vetoes f_L's vote)
    "blind vote 0.1": {"blind_vote": 0.1},  # the default since the eighth round
    "no blind vote": {"blind_vote": 0.0},  # the default before the eighth round
    "blind vote 0.05": {"blind_vote": 0.05},  # sensitivity of the threshold (reported, not a decision)
    "blind vote 0.2": {"blind_vote": 0.2},
    # f_L's weight in the transport cost (hypothesis: the target f is mostly f_N's echo, so the kernel counts the
    # sample-level view twice and f_L's class-level view once; f_N under-fits hard minority classes and the target
    # inherits it; weight 2 gives the two views parity) -- ninth round
    "f_L weight 2": {"imbalance_weight": 2.0},
    "f_L weight 1": {"imbalance_weight": 1.0},
    # the noisy label as evidence (eleventh round): f_N's term in the cost becomes f_N's posterior given the noisy
    # label through a transition estimated from f_N and the noisy labels (hypothesis: D-SINK's Q echoes f_N and
    # ignores the label, which in unstructured noise is right far more often than the transition's off-diagonal)
    "label evidence": {"label_evidence": "transition"},
    # kd's average, transported (twelfth round, second candidate): the kernel holds the arithmetic mean of f_N and f_L
    # (at the totals' prior) instead of their product, then f (hypothesis: in unstructured noise the product lets
    # f_N's low probability for a class it under-fits override f_L's vote, which kd's plain average keeps)
    "average kernel": {"cost": "average+target"},
    # each auxiliary read where it is trustworthy: f_L (LA, a CE) before it memorises its noisy labels (its selected
    # checkpoint), f_N (GCE, noise-robust) at its last epoch, the best fit it reaches (an early-stopped GCE can be
    # blind to a tail class) -- tenth round; kd reads the same checkpoints
    "f_L selected": {"aux_checkpoint": "imbalance_selected"},
    "kd, f_L selected": {"aux_checkpoint": "imbalance_selected"},
    # the ninth round's f_L weight 2 lost where f_L had memorised; with f_L read before it memorises -- tenth round
    "f_L selected, weight 2": {"aux_checkpoint": "imbalance_selected", "imbalance_weight": 2.0},
    # the average kernel with f_L read before it memorises (thirteenth round): the average kernel's label-correction
    # loss comes from f_L's memorised noisy labels, which the average (unlike the product) lets into Q; f_L's
    # selected checkpoint carries about half that mass. Held against "kd, f_L selected" (KD_ROWS)
    "average kernel, f_L selected": {"cost": "average+target", "aux_checkpoint": "imbalance_selected"},
    "auto totals": {"class_totals": "auto"},  # today's default, totals from the better-validated auxiliary
    "soft f_N totals": {"class_totals": "noise_soft"},  # today's default, totals = f_N's probability sums
    # "probability floor 1/N" ({"prob_floor": 1.0}: every cost model's probabilities floored at 1/N before the log, so
    # that no model can veto a class it is blind to) was measured on 2026-12-03 (same file) and dropped (docs/research/rounds.md)
    # "floored f_N totals" ({"class_totals": "noise_argmax_floor"}: f_N's counts, raised per class to the samples whose
    # noisy label f_L predicts) was measured on 2026-12-03 (same file) and dropped with its option (docs/research/rounds.md)
    # "mean totals" ({"class_totals": "mean_argmax"}: argmax counts of (f_L + f_N) / 2) was measured on
    # 2026-12-03 (studies/results/dsink_study_mlp_dev_pc.json) and dropped with its option (docs/research/rounds.md)
    # fourteenth round (docs/research/regimes.md): follow f_L alone when f_N is unfit, starting from its weights at a
    # tenth of the learning rate (candidate 6), and with the agreement calibration (candidate 7)
    "trust both, from scratch": {"trust": "both", "init": "scratch", "init_lr_scale": 1.0},  # the default before it
    "trust, fit start at 0.1 lr": {"trust": "validated", "init": "fit", "init_lr_scale": 0.1},
    # candidate 9: f starts from f_L's selected checkpoint, the one whose probabilities D-SINK reads
    "trust, fit start (selected) at 0.1 lr": {"trust": "validated", "init": "fit", "init_lr_scale": 0.1,
                                              "init_checkpoint": "auxiliary"},
    # candidate 10: candidate 6 only where the unfit auxiliary has also collapsed (predicts none of a quarter of the classes)
    "trust collapse, fit start at 0.1 lr": {"trust": "collapse", "init": "fit", "init_lr_scale": 0.1},
    # candidate 11: candidate 10 with the agreement calibration for a student trained from scratch, kd calibrated alike
    "trust collapse, fit start at 0.1 lr, calibrate": {"trust": "collapse", "init": "fit", "init_lr_scale": 0.1,
                                                       "calibrate": "agreement"},
    "kd, trust collapse, fit start at 0.1 lr, calibrate": {"calibrate": "agreement"},
    "trust, fit start at 0.1 lr, calibrate": {"trust": "validated", "init": "fit", "init_lr_scale": 0.1,
                                              "calibrate": "agreement"},
    "previous default": PREVIOUS,
    "paper-literal (soft f_L totals, no L_Base)": {**PREVIOUS, "class_totals": "soft", "base_loss": "none"},
    "base none": {**PREVIOUS, "base_loss": "none"},
    "base none, adjusted": {**PREVIOUS, "base_loss": "none", "distill": "adjusted"},
    "base none, adjusted, f_N totals": {**PREVIOUS, "base_loss": "none", "distill": "adjusted", "class_totals": "noise_argmax"},
    "base none, adjusted, f_N totals, f_L in cost": {**PREVIOUS, "base_loss": "none", "distill": "adjusted",
                                                     "class_totals": "noise_argmax", "cost": "noise+imbalance+target"},
    "base none, adjusted, f_N totals, ema": {**PREVIOUS, "base_loss": "none", "distill": "adjusted",
                                             "class_totals": "noise_argmax", "target_ema": 0.7},
    "base none, adjusted, f_N totals, f_L in cost, ema": {**PREVIOUS,
        "base_loss": "none", "distill": "adjusted", "class_totals": "noise_argmax",
        "cost": "noise+imbalance+target", "target_ema": 0.7},
    "base none, adjusted, f_L in cost": {**PREVIOUS, "base_loss": "none", "distill": "adjusted",
                                         "cost": "noise+imbalance+target"},
    "f_N totals, f_L in cost, ema, train pass": {**PREVIOUS,
        "base_loss": "none", "distill": "adjusted", "class_totals": "noise_argmax",
        "cost": "noise+imbalance+target", "target_ema": 0.7, "target_probs": "train"},
    "f_N totals, f_L in cost, ema, train pass, CE base": {**PREVIOUS,
        "base_loss": "ce", "distill": "adjusted", "class_totals": "noise_argmax",
        "cost": "noise+imbalance+target", "target_ema": 0.7, "target_probs": "train"},
    "f_N totals, f_L in cost, ema, train pass, plain": {**PREVIOUS,
        "base_loss": "none", "distill": "plain", "class_totals": "noise_argmax",
        "cost": "noise+imbalance+target", "target_ema": 0.7, "target_probs": "train"},
}
# the ladder: same loss for every rung (given by --ladder-loss), only the soft target changes
LADDER = {
    "(a) Q = f_N": ("kd", {"weight": 0.0}),
    "(b) Q = average (kd)": ("kd", {"weight": 0.5}),
    "(c) Q = OT(f_N, totals)": ("dsink", {"cost": "noise"}),
    "(d) D-SINK": ("dsink", {}),
}


def curves(run: str) -> dict[str, list]:
    rows = RunDir(run).read_metrics()
    return {k: [r.get(k) for r in rows] for k in ("test_acc", "val_acc", "val_bal_acc", "train_correction",
                                                      "train_pred_changes")}


def q_accuracy(run: str) -> float | None:
    """Accuracy of argmax Q (the last soft target) against the true training labels."""
    state = RunDir(run).load_checkpoint("last")
    q = (state.get("method") or {}).get("Q")
    if q is None:
        return None
    true = RunDir(run).read_predictions()["train_true"]
    return float((q.argmax(1).numpy() == true).mean())


def record(row: dict) -> list[dict]:
    out = []
    for run in row["runs"]:
        ev = RunDir(run).read_eval()
        rec = {"run": run, "top1": ev["last"]["top1"], "many": ev["last"]["many_acc"], "medium": ev["last"]["medium_acc"],
               "few": ev["last"]["few_acc"], "correction": (ev.get("train") or {}).get("correction_rate"),
               "top1_best_val": (ev.get("best") or {}).get("top1")}
        if RunDir(run).read_metrics():
            rec["curves"] = curves(run)
        if RunDir(run).has_checkpoint("last"):
            rec["q_acc"] = q_accuracy(run)
        out.append(rec)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=["dev"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"of: {', '.join(VARIANTS)}")
    ap.add_argument("--ladder-loss", default=None, help="variant whose loss settings the ladder uses (no ladder if unset)")
    ap.add_argument("--recipe", choices=list(RECIPES), default="mlp")
    ap.add_argument("--noise", default="gce", help="f_N's method (pipeline.noise.name; default gce)")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="an override appended to the recipe's (e.g. optim.epochs=2 for a smoke run); repeatable")
    ap.add_argument("--work", default="runs/study")
    ap.add_argument("--out", default=None)
    ap.add_argument("--report", metavar="RESULTS", help="print the markdown tables of a results file and exit")
    ap.add_argument("--decide", nargs=2, metavar=("BASE", "NEW"),
                    help="with --report: the decision table of variant NEW against variant BASE (the issue's criterion "
                         "for each, the change of D-SINK's top-1, label correction against f_N's)")
    ap.add_argument("--regimes", metavar="VARIANT",
                    help="with --report: VARIANT minus kd by noise structure (pair, semantic / the others) and imbalance "
                         "(rho <= 60 / above), and each row's late-epoch jitter and selected-minus-last gain")
    ap.add_argument("--gaps", metavar="VARIANT",
                    help="with --report: VARIANT minus the best other row per setting, paired by seed (mean +- standard "
                         "error), and the ceiling of its test curve against the best other row's selected checkpoint")
    args = ap.parse_args()
    if args.report:
        results = json.loads(Path(args.report).read_text())["results"]
        print(decision_table(results, *args.decide) if args.decide else gap_table(results, args.gaps) if args.gaps
              else regime_table(results, args.regimes) if args.regimes else markdown(results))
        return 0
    names = [n for s in args.settings for n in GROUPS.get(s, [s])]
    out = Path(args.out or Path(__file__).parent / "results" / f"dsink_study_{args.recipe}.json")
    report = json.loads(out.read_text()) if out.exists() else {"results": {}}
    report["meta"] = {"command": "python " + " ".join(sys.argv), "machine": platform.machine(),
                      "python": platform.python_version()}
    t0 = time.time()
    seeds = "[" + ",".join(map(str, args.seeds)) + "]"
    for name in names:
        rho, mode, rate = setting(name)
        common = RECIPES[args.recipe] + [
            f"data.imbalance_ratio={rho}", f"data.noise_mode={mode}", f"data.noise_rate={rate}",
            "train.track_correction=true", "train.eval_test_every=1", f"pipeline.seeds={seeds}",
            "pipeline.vary_data_seed=true", f"pipeline.cache_dir={args.work}/cache", f"pipeline.out={args.work}/tmp",
            f"pipeline.noise.name={args.noise}"] + args.extra
        res = report["results"].setdefault(f"{args.recipe}:{name}" + ("" if args.noise == "gce" else f" f_N={args.noise}"), {})

        def run(label, extra, pick):
            t = time.time()
            b, p = load_pipeline(None, common + extra)
            rows = run_pipeline(b, p)["rows"]
            for r in rows:
                if pick(r):
                    res[label if r["role"] == "target" or label.startswith(("(", "kd")) else r["method"]] = record(r)
            print(f"[{name}] {label}: {time.time() - t:.0f} s", file=sys.stderr, flush=True)

        run("reference", [], lambda r: r["role"] != "target")
        for v in args.variants:
            params = VARIANTS[v]
            if v.startswith("kd"):  # kd with these params (the distillation params it shares with D-SINK)
                run(v, [f"pipeline.overrides={json.dumps({'combined': {'method': {'params': params}}})}",
                        "pipeline.baselines=[]", "pipeline.combined=[kd]"], lambda r: r["role"] == "combined")
                continue
            run(v, [f"pipeline.target={json.dumps(params)}", "pipeline.baselines=[]", "pipeline.combined=[]"],
                lambda r: r["role"] == "target")
        if args.ladder_loss:
            loss = VARIANTS[args.ladder_loss]
            for rung, (method, params) in LADDER.items():
                if method == "kd":
                    shared = {k: v for k, v in loss.items() if k in ("alpha", "base_loss", "distill")}
                    extra = [f"pipeline.target={json.dumps(shared)}", "pipeline.baselines=[]", "pipeline.combined=[kd]",
                             f"pipeline.overrides={json.dumps({'combined': {'method': {'params': params}}})}"]
                    run(rung, extra, lambda r: r["role"] == "combined")
                else:
                    run(rung, [f"pipeline.target={json.dumps({**loss, **params})}", "pipeline.baselines=[]",
                               "pipeline.combined=[]"], lambda r: r["role"] == "target")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        print(markdown({f"{args.recipe}:{name}": res}), flush=True)
    print(f"total {time.time() - t0:.0f} s; {out}")
    return 0


def selected_top1(rec: dict) -> float | None:
    """Test top-1 at the epoch the engine's selection rule picks (``selection.RULES["val_bal"]``), from the
    curves; for a run without curves (the average) its ``top1_best_val``."""
    c = rec.get("curves") or {}
    if c.get("val_bal_acc") and c.get("test_acc") and None not in c["val_bal_acc"] and None not in c["test_acc"]:
        return c["test_acc"][RULES["val_bal"](c)]
    return rec.get("top1_best_val")


def markdown(results: dict) -> str:
    """Per setting: mean +- std over seeds of top-1 (last epoch), top-1 at the selected checkpoint, few-shot,
    label correction and argmax-Q accuracy, in percent."""
    out = []
    for setting, res in results.items():
        out += [f"\n**{setting}** ({len(next(iter(res.values())))} seeds)\n",
                "| method | top-1 | top-1 @selected | few | label correction | Q acc |", "|---|---|---|---|---|---|"]
        for label, recs in res.items():
            cells = []
            for get in (lambda r: r["top1"], selected_top1, lambda r: r["few"], lambda r: r["correction"],
                        lambda r: r.get("q_acc")):
                v = [100 * x for x in map(get, recs) if x is not None]
                cells.append(f"{np.mean(v):.2f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.2f}" if v else "-")
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


OTHER_ROWS = ("ce", "f_L (la)", "f_N (gce)", "average (f_L + f_N)", "kd")  # the rows D-SINK must beat
# kd reading the same checkpoints (kd has no weight knob and no cost)
KD_ROWS = {"f_L selected, weight 2": "kd, f_L selected", "average kernel, f_L selected": "kd, f_L selected"}


def best_other(others: dict, score) -> str:
    """The row of ``others`` (label -> per-seed records) with the highest ``score(records)``."""
    return max(others, key=lambda k: score(others[k]))


def decision_table(results: dict, base: str, new: str) -> str:
    """Per setting holding both variants: D-SINK's mean top-1 (last / selected) with each, the best other row at
    each checkpoint, whether the issue's criterion holds (best row at both), the change NEW - BASE, and label
    correction of NEW against f_N's; then the counts and mean changes. A variant V measured together with
    ``kd, V`` (the same auxiliaries' checkpoints for kd; or its KD_ROWS entry) is held against that kd row instead
    of the default kd."""
    mean = lambda recs, get: 100 * float(np.mean([get(r) for r in recs]))  # noqa: E731
    last, sel = (lambda r: r["top1"]), selected_top1
    out = [f"| setting | {base} | {new} | best other (last / selected) | criterion {base} / {new} | change | "
           f"correction {new} / f_N |", "|---|---|---|---|---|---|---|"]
    passes, changes = {base: 0, new: 0}, []
    for setting, res in results.items():
        if base not in res or new not in res:
            continue
        top, ok, best = {}, {}, {}
        for v in (base, new):
            others = {k: res[k] for k in OTHER_ROWS if k in res}
            kd = KD_ROWS.get(v, f"kd, {v}")
            if kd in res:
                others["kd"] = res[kd]
            names = [best_other(others, lambda recs: mean(recs, g)) for g in (last, sel)]
            best[v] = [(b, mean(others[b], g)) for b, g in zip(names, (last, sel))]
            top[v] = mean(res[v], last), mean(res[v], sel)
            ok[v] = top[v][0] > best[v][0][1] and top[v][1] > best[v][1][1]
            passes[v] += ok[v]
        cells = {v: f"{top[v][0]:.2f} / {top[v][1]:.2f}" for v in top}
        d = (top[new][0] - top[base][0], top[new][1] - top[base][1])
        changes.append(d)
        corr = mean(res[new], lambda r: r["correction"]), mean(res["f_N (gce)"], lambda r: r["correction"])
        shown = [f"{b} {x:.2f}" for b, x in best[base]]
        if best[new] != best[base]:
            shown = [f"{a} ({n} {y:.2f})" for a, (n, y) in zip(shown, best[new])]
        out.append(f"| {setting} | {cells[base]} | {cells[new]} | {shown[0]} / {shown[1]} | "
                   f"{'pass' if ok[base] else 'fail'} / {'pass' if ok[new] else 'fail'} | {d[0]:+.2f} / {d[1]:+.2f} | "
                   f"{corr[0]:.2f} / {corr[1]:.2f} |")
    c = np.array(changes)
    big = int(((c[:, 0] < -1.0) | (c[:, 1] < -1.0)).sum())
    out.append(f"\n{len(c)} settings: criterion {passes[base]} ({base}) / {passes[new]} ({new}); mean change "
               f"{c[:, 0].mean():+.2f} / {c[:, 1].mean():+.2f}; worst {c[:, 0].min():+.2f} / {c[:, 1].min():+.2f}; "
               f"{big} lose more than 1 point at a checkpoint; chance that at least 2 of 3 settings drawn from these "
               f"pass: {two_of_three(passes[base], len(c)):.2f} ({base}) / {two_of_three(passes[new], len(c)):.2f} ({new})")
    return "\n".join(out)


def gap_table(results: dict, variant: str) -> str:
    """Where VARIANT loses and by how much. Per setting: the best other row at the last epoch and at the selected
    checkpoint, and VARIANT minus it paired by seed (the rows share data and training seeds), mean +- standard
    error; then the ceiling of VARIANT's test curve (its best epoch on the test split: a diagnostic of whether any
    selection rule could close a gap, never used to choose anything) against the best other row's selected
    top-1. Counts at the end: losses within two standard errors, wins beyond them, settings whose ceiling is
    below the best selected other row."""
    pct = lambda recs, get: 100 * np.array([get(r) for r in recs], dtype=float)  # noqa: E731
    last, sel = (lambda r: r["top1"]), selected_top1
    out = [f"| setting | last: best other, {variant} - it | selected: best other, {variant} - it | "
           f"ceiling of {variant} / best other selected |", "|---|---|---|---|"]
    n = {"loss": 0, "noise": 0, "win": 0, "ceiling": 0, "settings": 0}
    for setting, res in results.items():
        if variant not in res:
            continue
        others = {k: res[k] for k in OTHER_ROWS if k in res}
        cells = []
        for get in (last, sel):
            b = best_other(others, lambda recs: pct(recs, get).mean())
            d = pct(res[variant], get) - pct(others[b], get)
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            n["loss"] += d.mean() < 0
            n["noise"] += -2 * se < d.mean() < 0
            n["win"] += d.mean() > 2 * se
            cells.append(f"{b} {d.mean():+.2f} ± {se:.2f}")
        best_sel = pct(others[b], sel).mean()  # b: the best other row at the selected checkpoint
        curves_ok = all((r.get("curves") or {}).get("test_acc") for r in res[variant])
        ceiling = pct(res[variant], lambda r: max(r["curves"]["test_acc"])).mean() if curves_ok else float("nan")
        n["ceiling"] += ceiling < best_sel
        n["settings"] += 1
        out.append(f"| {setting} | {cells[0]} | {cells[1]} | {ceiling:.2f} / {best_sel:.2f} |")
    out.append(f"\n{n['settings']} settings, {2 * n['settings']} comparisons: {variant} behind the best other row in "
               f"{n['loss']} ({n['noise']} of them within two standard errors), ahead by more than two standard errors "
               f"in {n['win']}; its test-curve ceiling below the best other row's selected top-1 in {n['ceiling']} settings")
    return "\n".join(out)


STRUCTURED = ("pair_random", "semantic")  # noise with systematic flips; the other modes spread them


def regime_table(results: dict, variant: str, split_rho: int = 60) -> str:
    """VARIANT minus kd (mean over the settings of each cell, last epoch / selected checkpoint, and how many settings
    VARIANT leads at the last epoch), by noise structure and imbalance: a descriptive split (docs/research/rounds.md, eleventh
    round). Then, per row, the mean epoch-to-epoch change of test top-1 over the last six epochs (the jitter a
    selection rule can pick peaks from) and the mean gain of the selected checkpoint over the last epoch."""
    mean = lambda recs, get: 100 * float(np.mean([get(r) for r in recs]))  # noqa: E731
    last = lambda r: r["top1"]  # noqa: E731
    cellsd: dict = {}
    for name, res in results.items():
        if variant not in res or "kd" not in res:
            continue
        rho, mode, _ = setting(name.split(":", 1)[1].split()[0])
        key = ("structured" if mode in STRUCTURED else "unstructured", f"rho <= {split_rho}" if rho <= split_rho
               else f"rho > {split_rho}")
        cellsd.setdefault(key, []).append([mean(res[variant], g) - mean(res["kd"], g) for g in (last, selected_top1)])
    out = [f"| noise, imbalance | settings | {variant} - kd (last / selected) | ahead at the last epoch |",
           "|---|---|---|---|"]
    for key in sorted(cellsd):
        a = np.array(cellsd[key])
        out.append(f"| {key[0]}, {key[1]} | {len(a)} | {a[:, 0].mean():+.2f} / {a[:, 1].mean():+.2f} | "
                   f"{int((a[:, 0] > 0).sum())} of {len(a)} |")
    out += ["", "| row | jitter (last six epochs) | selected - last |", "|---|---|---|"]
    rows = dict.fromkeys(k for res in results.values() for k in res)
    for row in rows:
        recs = [r for res in results.values() for r in res.get(row, []) if (r.get("curves") or {}).get("test_acc")]
        if recs:
            jitter = np.mean([np.abs(np.diff(100 * np.array(r["curves"]["test_acc"][-6:]))).mean() for r in recs])
            gain = np.mean([100 * (selected_top1(r) - r["top1"]) for r in recs])
            out.append(f"| {row} | {jitter:.2f} | {gain:+.2f} |")
    return "\n".join(out)


def two_of_three(k: int, n: int) -> float:
    """The chance that at least 2 of 3 settings drawn without replacement from n, k of which pass, pass."""
    from math import comb
    return (comb(k, 2) * (n - k) + comb(k, 3)) / comb(n, 3) if n >= 3 else float("nan")


if __name__ == "__main__":
    raise SystemExit(main())
