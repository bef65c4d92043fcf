import json

import numpy as np
import pytest
import torch

from dsink.config import load_config
from dsink.errors import InputError
from dsink.train import distill_config, train_run
from dsink.runs import load_checkpoint

SMALL = ["data.n_max=200", "data.imbalance_ratio=10", "data.noise_rate=0.3", "optim.batch_size=64", "model.name=mlp",
         "optim.lr=0.05", "optim.epochs=1"]


@pytest.fixture(scope="module")
def aux(tmp_path_factory):
    base = tmp_path_factory.mktemp("aux")
    over = SMALL + [f"data.cache_dir={base / 'cache'}"]
    runs = {}
    for m in ("la", "gce"):
        runs[m] = base / m
        train_run(load_config(None, over + [f"method.name={m}"]), runs[m])
    return runs, over


def test_dsink_smoke_run_logs_the_solver(tmp_path, aux):
    runs, _ = aux
    # the transport's own marginals: the blind vote (on by default) replaces rows of Q after the solve, and these
    # 2-epoch auxiliaries are blind to most classes (tested in test_blind_vote_gives_blind_rows_the_naive_average)
    cfg = distill_config(runs["la"], runs["gce"], None, ["optim.epochs=2", "method.params.blind_vote=0"])
    assert cfg.method.name == "dsink" and cfg.data.n_max == 200  # data config comes from the noise run
    report = train_run(cfg, tmp_path / "d")
    rows = [json.loads(l) for l in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert 1 <= r["sinkhorn_iters"] <= 1000 and r["sinkhorn_error"] <= 1e-6
        assert 0 <= r["q_disagree"] <= 1 and np.isfinite(r["distill_loss"])
    assert 0.1 < report["last"]["top1"] <= 1
    Q = load_checkpoint(tmp_path / "d" / "checkpoints" / "last.pt")["method"]["Q"]
    n = len(np.load(tmp_path / "d" / "predictions.npz")["train_noisy"])
    assert Q.shape == (n, 10) and torch.allclose(Q.sum(1), torch.ones(n), atol=1e-5)
    given = np.load(tmp_path / "d" / "inputs.npz")  # the auxiliaries' probabilities D-SINK was given
    # default class_totals = argmax counts of f_N - of f_L when trust=validated (the default) finds f_N unfit
    role = {0: "noise", 2: "imbalance"}[rows[0]["unfit_auxiliary"]]
    totals = np.bincount(given[f"{role}_train_probs"].argmax(1), minlength=10)
    assert np.allclose(Q.sum(0).numpy(), totals, atol=0.05)


def test_newton_solver_gives_the_first_refresh_of_sinkhorn(tmp_path, aux):
    """One epoch: the checkpointed Q is the first refresh's, made before any training, so the two solvers must agree."""
    runs, _ = aux
    qs = {}
    for solver in ("sinkhorn", "newton"):
        train_run(distill_config(runs["la"], runs["gce"], None, ["optim.epochs=1", f"method.params.solver={solver}"]),
                  tmp_path / solver)
        row = json.loads((tmp_path / solver / "metrics.jsonl").read_text().splitlines()[0])
        assert row["sinkhorn_error"] <= 1e-6 and row["epoch_start_s"] >= 0
        qs[solver] = (load_checkpoint(tmp_path / solver / "checkpoints" / "last.pt")["method"]["Q"], row["sinkhorn_iters"])
    assert float((qs["newton"][0] - qs["sinkhorn"][0]).abs().max()) < 1e-5
    assert qs["newton"][1] <= min(10, qs["sinkhorn"][1])  # passes over the kernel


def test_paper_preset_resolves_every_knob_and_solves_the_papers_problem(tmp_path, aux):
    """preset=paper: the stored config holds every knob at the paper's reading (not only the preset's name); the
    first refresh (before any training, f uniform) is the paper's transport: f_N alone in the kernel, totals =
    f_L's probability sums; a knob given beside the preset wins; an unknown preset is refused before any write."""
    import yaml

    from dsink import surrogate_labels
    from dsink.methods.dsink import PRESETS
    from dsink.runs import RunDir

    runs, _ = aux
    train_run(distill_config(runs["la"], runs["gce"], None, ["optim.epochs=1", "method.params.preset=paper"]),
              tmp_path / "paper")
    params = yaml.safe_load((tmp_path / "paper" / "config.yaml").read_text())["method"]["params"]
    assert params["preset"] == "paper"
    assert {k: params[k] for k in PRESETS["paper"]} == PRESETS["paper"]
    assert params["cost"] == "noise+target" and params["class_totals"] == "soft" and params["distill"] == "plain"
    assert params["base_loss"] == "ce" and params["blind_vote"] == 0 and params["aux_checkpoint"] == "last"
    pl, pn = (RunDir(runs[m]).read_predictions()["train_probs"].astype(np.float64) for m in ("la", "gce"))
    q = load_checkpoint(tmp_path / "paper" / "checkpoints" / "last.pt")["method"]["Q"].double().numpy()
    expect = surrogate_labels(pn, pl, preset="paper", tol=1e-10)
    assert np.abs(q - expect).max() < 1e-4
    assert np.allclose(q.sum(0), pl.sum(0), rtol=1e-3)  # the paper's class totals: f_L's probability sums
    train_run(distill_config(runs["la"], runs["gce"], None, ["optim.epochs=1", "method.params.preset=paper",
                                                             "method.params.eps=1"]), tmp_path / "eps1")
    assert yaml.safe_load((tmp_path / "eps1" / "config.yaml").read_text())["method"]["params"]["eps"] == 1
    with pytest.raises(InputError, match="unknown method.params.preset 'papr'; valid: dsink, paper"):
        train_run(distill_config(runs["la"], runs["gce"], None, ["method.params.preset=papr"]), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_default_preset_is_dsink_and_surrogate_labels_names_both():
    """The trainer's default is preset=dsink; surrogate_labels' default is the paper's problem and its dsink preset
    gives the trainer's default cost and totals."""
    from dsink import surrogate_labels
    from dsink.methods.dsink import DSinkParams

    p = DSinkParams()
    assert p.preset == "dsink" and p.cost == "average+target" and p.class_totals == "noise_argmax"
    rng = np.random.default_rng(0)
    pn, pl = rng.dirichlet(np.ones(4), 50), rng.dirichlet(np.ones(4), 50)
    kw = dict(tol=1e-10)
    assert np.allclose(surrogate_labels(pn, pl, **kw),
                       surrogate_labels(pn, pl, cost="noise+target", class_totals="soft", **kw))
    assert np.allclose(surrogate_labels(pn, pl, preset="dsink", **kw),
                       surrogate_labels(pn, pl, cost="average+target", class_totals="noise_argmax", **kw))
    with pytest.raises(InputError, match="unknown preset 'x'"):
        surrogate_labels(pn, pl, preset="x")

def test_blind_class_rows_finds_the_classes_f_n_never_predicts():
    from dsink.methods.dsink import blind_class_rows

    # 3 classes; f_N never predicts class 2, f_L predicts it on rows 0-3, of which rows 0-2 carry label 2
    p_imb = torch.tensor([[.1, .1, .8]] * 4 + [[.8, .1, .1]] * 4 + [[.1, .8, .1]] * 4)
    p_noise = torch.tensor([[.6, .3, .1]] * 4 + [[.8, .1, .1]] * 4 + [[.1, .8, .1]] * 4)
    labels = torch.tensor([2, 2, 2, 0, 0, 0, 0, 1, 1, 1, 1, 2])
    rows = blind_class_rows(p_imb, p_noise, labels, 0.1)
    assert rows.tolist() == [True] * 3 + [False] * 9  # the agreeing samples of the blind class only
    # class 1: f_N predicts 4, f_L agrees with 3 labels: blind only if 4 < ratio * 3
    assert not blind_class_rows(p_imb, p_noise, labels, 1.0)[7:11].any()
    p_noise2 = p_noise.clone()
    p_noise2[8:] = torch.tensor([.8, .1, .1])  # f_N now predicts class 1 once (row 7)
    assert blind_class_rows(p_imb, p_noise2, labels, 0.5)[8:11].all()  # 1 < 0.5 * 3


def test_blind_vote_gives_blind_rows_the_naive_average(tmp_path, aux):
    """blind_vote > 0: Q's rows of the blind classes' agreeing samples are (f_L + f_N) / 2, the others Q's."""
    from dsink.methods.dsink import blind_class_rows
    from dsink.runs import RunDir

    runs, _ = aux
    qs = {}
    for ratio in (0.0, 1.0):  # 1.0: blind wherever f_N predicts a class less often than f_L agrees with its labels
        # trust=both: the guard acts on both auxiliaries (trust=validated would replace this unfit f_N by f_L)
        train_run(distill_config(runs["la"], runs["gce"], None, ["optim.epochs=1", f"method.params.blind_vote={ratio}",
                                                                 "method.params.trust=both"]), tmp_path / str(ratio))
        qs[ratio] = load_checkpoint(tmp_path / str(ratio) / "checkpoints" / "last.pt")["method"]["Q"]
    pred = RunDir(runs["la"]).read_predictions()
    pl, pn = (torch.as_tensor(RunDir(runs[m]).read_predictions()["train_probs"]).float() for m in ("la", "gce"))
    rows = blind_class_rows(pl, pn, torch.as_tensor(pred["train_noisy"]), 1.0)
    assert 0 < int(rows.sum()) < len(rows)
    assert torch.allclose(qs[1.0][rows], 0.5 * (pl + pn)[rows], atol=1e-6)
    assert torch.equal(qs[1.0][~rows], qs[0.0][~rows])
    metrics = [json.loads(x) for x in (tmp_path / "1.0" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["blind_rows"] == int(rows.sum())
    with pytest.raises(InputError, match="blind_vote must be in"):
        train_run(distill_config(runs["la"], runs["gce"], None, ["method.params.blind_vote=2"]), tmp_path / "bad")


def test_dsink_resume_is_bit_identical(tmp_path, aux):
    runs, _ = aux
    # a refresh every epoch: the resumed epoch's refresh reads f's averaged probabilities from the checkpoint
    over = ["optim.epochs=2", "method.params.refresh_every=1"]
    cfg = distill_config(runs["la"], runs["gce"], None, over)
    train_run(cfg, tmp_path / "full")
    train_run(distill_config(runs["la"], runs["gce"], None, over), tmp_path / "part", stop_after=1)
    train_run(cfg, tmp_path / "part", resume=True)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert all(torch.equal(a["models"]["net"][k], b["models"]["net"][k]) for k in a["models"]["net"])
    assert torch.equal(a["method"]["Q"], b["method"]["Q"])
    assert torch.equal(a["method"]["target_avg"], b["method"]["target_avg"])
    iters = [[json.loads(line)["sinkhorn_iters"] for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
             for r in ("full", "part")]
    assert iters[0] == iters[1] and len(iters[0]) == 2


def test_auxiliaries_from_other_data_are_refused(tmp_path, aux):
    runs, over = aux
    other = tmp_path / "other"
    train_run(load_config(None, over + ["method.name=gce", "data.data_seed=1"]), other)
    with pytest.raises(InputError, match="different data"):
        train_run(distill_config(runs["la"], other, None, ["data.data_seed=0"]), tmp_path / "d")
    assert not (tmp_path / "d" / "checkpoints").exists()


def test_bad_knobs_and_init_from_noise(tmp_path, aux):
    runs, _ = aux
    with pytest.raises(InputError, match="valid base losss|valid base loss"):
        train_run(distill_config(runs["la"], runs["gce"], None, ["method.params.base_loss=focal"]), tmp_path / "a")
    with pytest.raises(InputError, match="unknown config key"):
        distill_config(runs["la"], runs["gce"], None, ["method.params.lambda=1"]) and train_run(
            distill_config(runs["la"], runs["gce"], None, ["method.params.lambda=1"]), tmp_path / "b")
    for gone in ("omega=0.5", "warm_start=true", "avg_mix=0.5", "imbalance_weight=2", "label_evidence=transition"):
        with pytest.raises(InputError, match="unknown config key"):  # tested, rejected and removed (docs/research)
            train_run(distill_config(runs["la"], runs["gce"], None, [f"method.params.{gone}"]), tmp_path / "o")
    with pytest.raises(InputError, match="same model"):
        train_run(distill_config(runs["la"], runs["gce"], None, ["method.params.init=noise", "model.name=small_cnn"]), tmp_path / "c")
    assert not any((tmp_path / d).exists() for d in "abco")  # refused before a run directory was made
    cfg = distill_config(runs["la"], runs["gce"], None, ["method.params.init=noise", "optim.epochs=1"])
    assert train_run(cfg, tmp_path / "d")["last"]["top1"] > 0.1


def test_distill_cli(tmp_path, aux, capsys):
    from dsink.cli import main

    runs, _ = aux
    out = tmp_path / "cli"
    assert main(["distill", "--imbalance-run", str(runs["la"]), "--noise-run", str(runs["gce"]), "--epochs", "1",
                 "--set", "method.params.alpha=0.5", "--out", str(out), "-q"]) == 0
    assert "top1" in capsys.readouterr().out
    from dsink.runs import RunDir

    cfg = RunDir(out).load_config()
    assert cfg.optim.epochs == 1 and cfg.method.params["alpha"] == 0.5 and cfg.method.params["class_totals"] == "noise_argmax"
    assert main(["distill", "--imbalance-run", str(tmp_path / "none"), "--noise-run", str(runs["gce"])]) == 2
    assert "is not a dsink run directory" in capsys.readouterr().err


def test_kd_distils_the_fixed_average_of_the_auxiliaries(tmp_path, aux):
    """kd: Q = w f_L + (1 - w) f_N, fixed; the loss is L_Base + alpha * CE_soft(Q, f), as in D-SINK."""
    import dataclasses

    from dsink.config import MethodConfig
    from dsink.methods import MethodContext
    from dsink.runs import RunDir
    from dsink.train.inputs import build_method

    runs, _ = aux
    pl, pn = (torch.as_tensor(RunDir(runs[m]).read_predictions()["train_probs"]) for m in ("la", "gce"))
    fp = json.loads((runs["gce"] / "eval.json").read_text())["data_fingerprint"]
    ctx = MethodContext(num_classes=10, class_counts=np.ones(10), num_train=len(pl), epochs=1,
                        device=torch.device("cpu"), noise_rate=0.3, fingerprint=fp)
    params = {"imbalance_run": str(runs["la"]), "noise_run": str(runs["gce"]), "weight": 0.3, "alpha": 2.0,
              "base_loss": "none"}
    kd = build_method(MethodConfig(name="kd", params=params), ctx)
    assert torch.allclose(kd.Q, 0.3 * pl + 0.7 * pn) and torch.allclose(kd.Q.sum(1), torch.ones(len(pl)), atol=1e-5)
    net = torch.nn.Linear(4, 10)
    x, idx = torch.randn(6, 4), torch.arange(6)
    out = kd.training_step({"net": net}, x, torch.zeros(6, dtype=torch.long), idx, 0)
    # default distill=adjusted: the logits are shifted by the log of Q's class shares (f's output is balanced)
    log_pi = (kd.Q.double().mean(0) / kd.Q.double().mean(0).sum()).log().float()
    want = -(kd.Q[idx] * torch.log_softmax(net(x) + log_pi, 1)).sum(1).mean() * 2.0
    assert torch.allclose(out["loss"], want)
    assert torch.allclose(kd.label_log_prior(), log_pi)  # training labels are predicted under Q's prior
    plain = build_method(MethodConfig(name="kd", params={**params, "distill": "plain"}), ctx)
    out = plain.training_step({"net": net}, x, torch.zeros(6, dtype=torch.long), idx, 0)
    assert torch.allclose(out["loss"], -(kd.Q[idx] * torch.log_softmax(net(x), 1)).sum(1).mean() * 2.0)
    assert plain.label_log_prior() is None
    with pytest.raises(InputError, match="weight must be in"):
        build_method(MethodConfig(name="kd", params={**params, "weight": 1.5}), ctx)
    with pytest.raises(InputError, match="differs from both auxiliaries"):
        build_method(MethodConfig(name="kd", params=params), dataclasses.replace(ctx, fingerprint="other"))
    # and as a run: trains, evaluates, logs the share of labels Q disagrees with
    cfg = distill_config(runs["la"], runs["gce"], None, ["method.name=kd", "optim.epochs=1"])
    report = train_run(cfg, tmp_path / "kd")
    row = json.loads((tmp_path / "kd" / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 <= row["q_disagree"] <= 1 and np.isfinite(row["distill_loss"]) and 0.1 < report["last"]["top1"] <= 1


def test_auto_class_totals_follow_the_better_validated_auxiliary(tmp_path, aux, caplog):
    """class_totals=auto: the argmax counts of whichever auxiliary has the higher class-balanced accuracy on the
    noisy validation split (read from the runs, stored with the inputs for resume, audit and evaluation)."""
    import logging

    from dsink.config import MethodConfig
    from dsink.methods import MethodContext, build_method
    from dsink.ot.surrogate import resolve_class_totals
    from dsink.runs import RunDir
    from dsink.train.inputs import method_inputs

    assert resolve_class_totals("soft", None) == "soft"
    assert resolve_class_totals("auto", {"imbalance": 0.7, "noise": 0.6}) == "argmax"
    assert resolve_class_totals("auto", {"imbalance": 0.6, "noise": 0.6}) == "noise_argmax"  # ties keep f_N
    with caplog.at_level(logging.WARNING):
        assert resolve_class_totals("auto", {"noise": 0.6}) == "noise_argmax"
    assert "validation scores are unknown" in caplog.text

    runs, _ = aux
    pl, pn = (RunDir(runs[m]).read_predictions()["train_probs"] for m in ("la", "gce"))
    fp = json.loads((runs["gce"] / "eval.json").read_text())["data_fingerprint"]
    params = {"imbalance_run": str(runs["la"]), "noise_run": str(runs["gce"]), "class_totals": "auto"}
    cfg = MethodConfig(name="dsink", params=params)
    inputs = method_inputs(cfg, fp)
    scores = inputs["aux_scores"]
    assert sorted(scores) == ["imbalance", "noise"]
    for role, m in (("imbalance", "la"), ("noise", "gce")):  # the class-balanced accuracy, recomputed here
        pred = RunDir(runs[m]).read_predictions()
        hit = pred["val_probs"].argmax(1) == pred["val_noisy"]
        per_class = [hit[pred["val_noisy"] == c].mean() for c in np.unique(pred["val_noisy"])]
        assert scores[role] == pytest.approx(float(np.mean(per_class)))
    for fake, want in (({"imbalance": 0.9, "noise": 0.1}, pl), ({"imbalance": 0.1, "noise": 0.9}, pn)):
        ctx = MethodContext(num_classes=10, class_counts=np.ones(10), num_train=len(pl), epochs=1,
                            device=torch.device("cpu"), noise_rate=0.3, fingerprint=fp,
                            aux_probs=inputs["aux_probs"], aux_scores=fake)
        method = build_method(cfg, ctx)
        counts = np.bincount(np.asarray(want).argmax(1), minlength=10).astype(float)
        assert np.allclose(method.totals.numpy(), counts * len(pl) / counts.sum())
    # the scores travel with the stored inputs (a resumed or moved run decides the same way)
    run = RunDir(tmp_path / "target")
    run.path.mkdir()
    run.write_inputs(inputs["aux_probs"], fp, inputs["aux_scores"])
    assert run.read_inputs()[2] == pytest.approx(scores)
    run.write_inputs(inputs["aux_probs"], fp)
    assert run.read_inputs()[2] == {}


def test_auxiliaries_at_their_selected_checkpoint(tmp_path, aux, caplog):
    """aux_checkpoint=selected: D-SINK and kd read f_L's and f_N's training-set probabilities at the checkpoint
    their selection rule chose (stored by the evaluation); a run evaluated by an older dsink is refused with the fix
    (and re-evaluated when a pipeline or a resume meets it finished); a run without a selected checkpoint gives its
    last epoch, with a warning."""
    import logging
    import shutil

    from dsink.config import MethodConfig
    from dsink.runs import RunDir
    from dsink.train.inputs import method_inputs

    runs, _ = aux
    fp = json.loads((runs["gce"] / "eval.json").read_text())["data_fingerprint"]
    copies = {}
    for m in ("la", "gce"):
        copies[m] = RunDir(tmp_path / m)
        shutil.copytree(runs[m], copies[m].path)
        pred = copies[m].read_predictions()
        assert {"best_train_probs", "best_val_probs", "best_test_probs"} <= set(pred)
        assert pred["best_train_probs"].shape == pred["train_probs"].shape
        fake = np.roll(np.eye(10, dtype=np.float32), 3, axis=1)[pred["train_noisy"]]  # unlike the last epoch's
        copies[m].write_predictions({**pred, "best_train_probs": fake})
    params = {"imbalance_run": str(copies["la"].path), "noise_run": str(copies["gce"].path)}
    for name in ("dsink", "kd"):
        got = method_inputs(MethodConfig(name=name, params={**params, "aux_checkpoint": "selected"}), fp)["aux_probs"]
        last = method_inputs(MethodConfig(name=name, params={**params, "aux_checkpoint": "last"}), fp)["aux_probs"]
        for role, m in (("imbalance", "la"), ("noise", "gce")):
            pred = copies[m].read_predictions()
            assert np.array_equal(got[role], pred["best_train_probs"])
            assert np.array_equal(last[role], pred["train_probs"])
        # imbalance_selected: f_L at its selected checkpoint, f_N at its last epoch
        mixed = method_inputs(MethodConfig(name=name, params={**params, "aux_checkpoint": "imbalance_selected"}),
                              fp)["aux_probs"]
        assert np.array_equal(mixed["imbalance"], copies["la"].read_predictions()["best_train_probs"])
        assert np.array_equal(mixed["noise"], copies["gce"].read_predictions()["train_probs"])
    # the default reads f_L at its selected checkpoint and f_N at its last epoch
    default = method_inputs(MethodConfig(name="dsink", params=params), fp)["aux_probs"]
    assert np.array_equal(default["imbalance"], copies["la"].read_predictions()["best_train_probs"])
    assert np.array_equal(default["noise"], copies["gce"].read_predictions()["train_probs"])
    selected = MethodConfig(name="dsink", params={**params, "aux_checkpoint": "selected"})
    with pytest.raises(InputError, match="unknown aux_checkpoint 'best'"):
        method_inputs(MethodConfig(name="dsink", params={**params, "aux_checkpoint": "best"}), fp)
    # evaluated before the selected checkpoint's training probabilities were stored: refused, naming the fix
    pred = copies["la"].read_predictions()
    copies["la"].write_predictions({k: v for k, v in pred.items() if k != "best_train_probs"})
    assert not copies["la"].has_prediction("best_train_probs")
    with pytest.raises(InputError, match=r"dsink eval .*aux_checkpoint=last"):
        method_inputs(selected, fp)
    # a finished run met again (a pipeline's cache, a resume) is evaluated again, which adds them
    train_run(copies["la"].load_config(), copies["la"].path, resume=True)
    assert copies["la"].has_prediction("best_train_probs")
    # no selected checkpoint (no validation split): the last epoch, with a warning
    copies["gce"].checkpoint_path("best").unlink()
    pred = copies["gce"].read_predictions()
    copies["gce"].write_predictions({k: v for k, v in pred.items() if not k.startswith("best_")})
    with caplog.at_level(logging.WARNING):
        got = method_inputs(selected, fp)["aux_probs"]
    assert "has no selected checkpoint" in caplog.text
    assert np.array_equal(got["noise"], pred["train_probs"])


def test_the_training_pass_keeps_f_s_probabilities_of_the_rows_it_saw(aux):
    """target_probs=train: each step files its batch's logits; at the epoch's end the rows seen hold exactly the
    softmax of those logits (as a per-batch softmax would give; a row seen twice, the later step's) and the rows not
    seen keep what they held. Then a permutation's epoch (every row once) is written in one copy, alike."""
    from dsink.config import MethodConfig
    from dsink.methods import MethodContext
    from dsink.runs import RunDir
    from dsink.train.inputs import build_method

    runs, _ = aux
    pl = RunDir(runs["la"]).read_predictions()["train_probs"]
    fp = json.loads((runs["gce"] / "eval.json").read_text())["data_fingerprint"]
    ctx = MethodContext(num_classes=10, class_counts=np.ones(10), num_train=len(pl), epochs=1,
                        device=torch.device("cpu"), noise_rate=0.3, fingerprint=fp)
    m = build_method(MethodConfig(name="dsink", params={"imbalance_run": str(runs["la"]), "noise_run": str(runs["gce"])}), ctx)
    m.set_target(m.average())
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 10)
    batches = [torch.tensor([5, 0, 17]), torch.tensor([3, 9]), torch.tensor([21, 0])]  # row 0 twice
    xs = [torch.randn(len(i), 4) for i in batches]
    before = m.train_pass.clone()
    for x, idx in zip(xs, batches):
        out = m.training_step({"net": net}, x, torch.zeros(len(idx), dtype=torch.long), idx, 0)
        assert torch.equal(out["base_loss"], torch.zeros(())) and torch.equal(out["loss"], out["distill_loss"])
    m.on_epoch_end(0, None)
    want = {}
    for x, idx in zip(xs, batches):
        want.update(zip(idx.tolist(), net(x).detach().softmax(1)))
    assert sorted(want) == [0, 3, 5, 9, 17, 21] and not m.pass_batches
    for row, p in want.items():
        assert torch.equal(m.train_pass[row], p), row
    assert not torch.equal(want[0], net(xs[0][1:2]).detach().softmax(1)[0])  # the later step's row 0 won
    rest = torch.ones(len(pl), dtype=torch.bool)
    rest[list(want)] = False
    assert torch.equal(m.train_pass[rest], before[rest]) and not m.seen.any()
    perm = torch.randperm(len(pl))
    chunks = [perm[i:i + 64] for i in range(0, len(pl), 64)]
    xs = [torch.randn(len(i), 4) for i in chunks]
    for x, idx in zip(xs, chunks):
        m.training_step({"net": net}, x, torch.zeros(len(idx), dtype=torch.long), idx, 1)
    m.on_epoch_end(1, None)
    logits = torch.empty(len(pl), 10)
    for x, idx in zip(xs, chunks):
        logits[idx] = net(x).detach()
    assert torch.allclose(m.train_pass, logits.softmax(1), rtol=1e-6, atol=1e-7) and not m.seen.any()


def test_q_disagree_counts_rows_whose_label_is_not_the_largest_entry():
    """q_disagree: the share of rows whose noisy label is not Q's largest entry; a label tied with it agrees."""
    from types import SimpleNamespace

    from dsink.methods.distill import _Distill

    q = torch.tensor([[.7, .2, .1], [.2, .7, .1], [.4, .4, .2], [.1, .1, .8], [.3, .3, .4]])
    labels = torch.tensor([0, 0, 1, 2, 1])  # agree, disagree, tie (agrees), agree, disagree
    assert _Distill.q_disagree(SimpleNamespace(Q=q), labels) == pytest.approx(2 / 5)
    no_ties = q[[0, 1, 3, 4]]
    assert _Distill.q_disagree(SimpleNamespace(Q=no_ties), labels[[0, 1, 3, 4]]) == pytest.approx(
        float((no_ties.argmax(1) != labels[[0, 1, 3, 4]]).float().mean()))
