"""calibrate=agreement: correct but flat auxiliaries are sharpened to what the noisy labels certify, so a tiny
folder trained for two epochs does not collapse the distilled target to one class."""

import json

import numpy as np
import pytest
import torch

from dsink.config import load_config
from dsink.methods.distill import MIN_TEMPERATURE, agreement_temperature, sharpen
from dsink.train import distill_config, train_run


def test_sharpen_keeps_the_argmax_and_zeros():
    p = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.1, 0.1, 0.7, 0.1]])
    s = sharpen(p, 0.5)
    assert torch.equal(s.argmax(1), p.argmax(1)) and torch.allclose(s.sum(1), torch.ones(2))
    assert float(s[0, 3]) == 0.0 and float(s.max(1).values.min()) > float(p.max(1).values.min())
    assert sharpen(p, 1.0) is p


def test_agreement_temperature_sharpens_flat_auxiliaries_only():
    labels = torch.arange(3).repeat(20)
    flat = torch.full((60, 3), 0.3)
    flat[torch.arange(60), labels] = 0.4  # right everywhere, 0.4 confident
    t, conf, agree = agreement_temperature(flat, flat, labels)
    assert agree == 1.0 and conf == pytest.approx(0.4) and t == MIN_TEMPERATURE  # agreement 1: as sharp as allowed
    half = flat.clone()
    half[30:] = half[30:].roll(1, dims=1)  # half the rows now disagree with their label
    t, conf, agree = agreement_temperature(half, half, labels)
    assert agree == pytest.approx(0.5) and MIN_TEMPERATURE < t < 1
    a = 0.5 * sharpen(half, t) + 0.5 * sharpen(half, t)
    assert float(a.max(1).values.mean()) == pytest.approx(0.5, abs=1e-3)  # as confident as the agreement
    noisy = labels.clone()
    noisy[::5] = (noisy[::5] + 1) % 3  # a fifth of the labels flipped: agreement 0.8
    sure = torch.eye(3)[labels] * 0.9 + 0.1 / 3  # 0.93 confident
    assert agreement_temperature(sure, sure, noisy) == (1.0, pytest.approx(0.9333, abs=1e-4), pytest.approx(0.8))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """3 classes of 20 colour images of mixed sizes: the folder a new user tries first."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny") / "PHOTOS"
    rng = np.random.default_rng(0)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    for k, name in enumerate("abc"):
        (root / name).mkdir(parents=True)
        for i in range(20):
            s = int(rng.integers(20, 48))
            img = np.clip(np.array(colours[k]) + rng.normal(0, 40, (s, s, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


def test_tiny_folder_two_epochs_does_not_collapse(tmp_path, tiny_folder):
    """Two epochs of one batch on 54 images with a small CNN: the auxiliaries are right and flat; with
    calibrate=agreement the D-SINK target predicts every class of the validation split."""
    over = ["data.dataset=image_folder", f"data.root={tiny_folder}", "data.image_size=32", "model.name=small_cnn",
            "optim.epochs=2", f"data.cache_dir={tmp_path / 'cache'}"]
    runs = {}
    for m in ("la", "gce"):
        runs[m] = tmp_path / m
        train_run(load_config(None, over + [f"method.name={m}"]), runs[m])
    target = tmp_path / "dsink"
    train_run(distill_config(runs["la"], runs["gce"], None, ["method.params.calibrate=agreement"]), target)
    first = json.loads((target / "metrics.jsonl").read_text().splitlines()[0])
    assert first["aux_temperature"] < 1.0  # the auxiliaries were flat: sharpened
    with np.load(target / "predictions.npz") as z:
        pred, val = z["val_probs"].argmax(1), z["val_noisy"]
    assert set(pred.tolist()) == {0, 1, 2} and (pred == val).mean() >= 2 / 3


def test_unfit_auxiliary_needs_a_blind_class_and_a_lower_validation_score():
    from dsink.methods.dsink import TRUST_MARGIN, unfit_auxiliary

    labels = torch.arange(3).repeat_interleave(30)
    fit = torch.eye(3)[labels] * 0.7 + 0.1
    blind = torch.eye(3)[torch.where(labels == 2, 0, labels)] * 0.7 + 0.1  # never predicts class 2
    low, high = {"imbalance": 0.9, "noise": 0.9 - 2 * TRUST_MARGIN}, {"imbalance": 0.9, "noise": 0.9}
    assert unfit_auxiliary(fit, blind, labels, low) == "noise"
    assert unfit_auxiliary(fit, blind, labels, high) is None  # blind but not worse on validation: kept
    assert unfit_auxiliary(fit, fit, labels, low) is None  # worse on validation but blind to nothing: kept
    assert unfit_auxiliary(blind, fit, labels, {"imbalance": 0.5, "noise": 0.9}) == "imbalance"
    assert unfit_auxiliary(fit, blind, labels, None) is None  # no validation split: nothing is called unfit


def test_trust_collapse_needs_a_quarter_of_the_classes_unpredicted():
    """trust=collapse: validated's rule, and the auxiliary predicts no training sample of ceil(C / 4) classes - 3 of
    10 - so an f_N that merges one or two tail classes into others is kept, one that has lost three is replaced."""
    from dsink.methods.dsink import TRUST_MARGIN, unfit_auxiliary, unpredicted_classes

    labels = torch.arange(10).repeat_interleave(20)
    fit = torch.eye(10)[labels] * 0.9 + 0.01
    low = {"imbalance": 0.9, "noise": 0.9 - 2 * TRUST_MARGIN}

    def losing(k):  # never predicts the last k classes (their samples go to class 0)
        return torch.eye(10)[torch.where(labels >= 10 - k, 0, labels)] * 0.9 + 0.01

    assert [unpredicted_classes(losing(k)) for k in (0, 1, 2, 3, 6)] == [0, 1, 2, 3, 6]
    for k in (1, 2):
        assert unfit_auxiliary(fit, losing(k), labels, low) == "noise"  # validated replaces it
        assert unfit_auxiliary(fit, losing(k), labels, low, collapse=True) is None  # collapse keeps it
    for k in (3, 6):
        assert unfit_auxiliary(fit, losing(k), labels, low, collapse=True) == "noise"
    assert unfit_auxiliary(fit, losing(6), labels, {"imbalance": 0.9, "noise": 0.9}, collapse=True) is None
    assert unfit_auxiliary(losing(3), fit, labels, {"imbalance": 0.5, "noise": 0.9}, collapse=True) == "imbalance"


def test_target_average_is_not_a_view_of_the_training_pass():
    """f's averaged probabilities (target_ema) start from a copy of the first training pass: the next epoch's pass,
    written in place into train_pass, must not change them (it did: the average started one refresh late)."""
    from types import SimpleNamespace

    from dsink.methods.dsink import DSink

    d = DSink.__new__(DSink)
    d.p = SimpleNamespace(target_probs="train", init="scratch", target_ema=0.7)
    d.target_avg = None
    d.train_pass = torch.full((4, 2), 0.5)
    first = d._target_probs(1, None, 0, 4)
    d.train_pass[:] = torch.tensor([1.0, 0.0])  # the next epoch's pass, in place
    assert torch.equal(first, torch.full((4, 2), 0.5)) and torch.equal(d.target_avg, torch.full((4, 2), 0.5))
    second = d._target_probs(2, None, 0, 4)
    assert torch.allclose(second, 0.7 * torch.full((4, 2), 0.5) + 0.3 * torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("init,unfit,loaded", [("fit", "noise", "imbalance"), ("fit", None, None),
                                               ("fit", "imbalance", None), ("noise", None, "noise"),
                                               ("scratch", "noise", None)])
def test_init_fit_starts_from_f_l_only_when_f_n_is_unfit(init, unfit, loaded):
    from types import SimpleNamespace

    from dsink.methods.dsink import DSink, DSinkParams

    assert DSink.init_from(DSinkParams(init=init)) == {"noise": "noise", "fit": "imbalance"}.get(init)
    saved = torch.nn.Linear(3, 2).state_dict()
    d = DSink.__new__(DSink)
    d.p = SimpleNamespace(init=init, init_lr_scale=0.1)
    d.ctx = SimpleNamespace(init_weights=saved if init != "scratch" else None)
    d.unfit, d.started_from, d.lr_scale = unfit, None, 1.0
    net = d.build_models(lambda: torch.nn.Linear(3, 2))["net"]
    same = torch.equal(net.weight, saved["weight"])
    assert same == (loaded is not None) and d.started_from == loaded
    assert d.lr_scale == (0.1 if loaded else 1.0)  # the fine-tuning rate only for a trained start


def test_a_trained_start_trains_at_the_scaled_rate(tmp_path):
    """init=noise starts f from f_N's weights: with init_lr_scale the optimiser's groups and the logged rate are
    scaled; from scratch the knob changes nothing."""
    from dsink.runs import RunDir

    over = ["data.n_max=40", "data.imbalance_ratio=5", "model.name=mlp", "model.width=16", "optim.epochs=1",
            "optim.optimizer=sgd", "optim.lr=0.2", "optim.schedule=constant", f"data.cache_dir={tmp_path / 'cache'}"]
    for m in ("la", "gce"):
        train_run(load_config(None, over + [f"method.name={m}"]), tmp_path / m)
    for init, want in (("noise", 0.02), ("scratch", 0.2)):
        out = tmp_path / f"dsink-{init}"
        train_run(distill_config(tmp_path / "la", tmp_path / "gce", None,
                                 [f"method.params.init={init}", "method.params.init_lr_scale=0.1"]), out)
        state = RunDir(out).load_checkpoint("last")
        groups = state["optimizer"]["param_groups"]
        assert [g["lr_scale"] for g in groups] == pytest.approx([want / 0.2] * len(groups))
        assert [g["lr"] for g in groups] == pytest.approx([want] * len(groups))  # the constant schedule's rate


def test_init_fit_with_another_model_than_f_l_starts_from_scratch(caplog):
    """The default init=fit never refuses a target of another model: it warns and trains f from scratch (init=noise,
    asked for explicitly, still refuses)."""
    from types import SimpleNamespace

    from dsink.errors import InputError
    from dsink.methods.dsink import DSink

    saved = torch.nn.Linear(3, 2).state_dict()
    for init in ("fit", "noise"):
        d = DSink.__new__(DSink)
        d.p = SimpleNamespace(init=init, init_lr_scale=0.1)
        d.ctx = SimpleNamespace(init_weights=lambda: saved)  # read only when used
        d.unfit, d.started_from, d.lr_scale = "noise", None, 1.0
        if init == "noise":
            with pytest.raises(InputError, match="same model"):
                d.build_models(lambda: torch.nn.Linear(4, 2))
            continue
        with caplog.at_level("WARNING"):
            net = d.build_models(lambda: torch.nn.Linear(4, 2))["net"]
        assert net.weight.shape == (2, 4) and d.started_from is None and d.lr_scale == 1.0
        assert "starts from scratch" in caplog.text


@pytest.mark.parametrize("lost,follows", [(2, None), (3, "noise")])
def test_the_defaults_follow_f_l_from_its_weights_only_when_f_n_has_collapsed(lost, follows):
    """With the defaults (trust=collapse, init=fit, init_lr_scale=0.1): an f_N blind to tail classes, scoring below
    f_L and predicting none of 3 of 10 classes is replaced by f_L (totals = f_L's counts) and f starts from f_L's
    weights at a tenth of the rate; one that loses 2 classes keeps both auxiliaries and a from-scratch f."""
    from dsink.methods import MethodContext
    from dsink.methods.dsink import DSink, DSinkParams

    labels = torch.arange(10).repeat_interleave(20)
    p_imb = torch.eye(10)[labels] * 0.9 + 0.01
    p_noise = torch.eye(10)[torch.where(labels >= 10 - lost, 0, labels)] * 0.9 + 0.01
    saved = torch.nn.Linear(3, 10).state_dict()
    ctx = MethodContext(num_classes=10, class_counts=np.full(10, 20), num_train=200, epochs=1,
                        device=torch.device("cpu"), noise_rate=0.3, labels=labels.numpy(),
                        aux_probs={"imbalance": p_imb.numpy(), "noise": p_noise.numpy()},
                        aux_scores={"imbalance": 0.9, "noise": 0.7}, init_weights=lambda: saved)
    d = DSink(DSinkParams(), ctx)
    assert d.unfit == follows
    want = p_imb if follows else p_noise
    assert torch.allclose(d.totals.double(), torch.bincount(want.argmax(1), minlength=10).double())
    net = d.build_models(lambda: torch.nn.Linear(3, 10))["net"]
    assert torch.equal(net.weight, saved["weight"]) == (follows is not None)
    assert d.started_from == ("imbalance" if follows else None) and d.lr_scale == (0.1 if follows else 1.0)


def _collapsed_ctx(p_imb, p_noise, labels, counts, scores):
    from dsink.methods import MethodContext

    return MethodContext(num_classes=p_imb.shape[1], class_counts=counts, num_train=len(labels), epochs=1,
                         device=torch.device("cpu"), noise_rate=0.3, labels=labels.numpy(),
                         aux_probs={"imbalance": p_imb.numpy(), "noise": p_noise.numpy()}, aux_scores=scores)


def test_trust_fill_prior_moves_the_fit_auxiliary_to_the_posterior_it_replaces():
    """trust_fill=prior: f_L in f_N's place is softmax(log f_L + log prior) (the noisy labels' class shares: what
    its logit-adjusted loss fits), so the totals are that posterior's argmax counts; raw keeps f_L's balanced
    posterior, whose argmax over-counts the tail. f_N in f_L's place is divided by the prior."""
    from dsink.errors import InputError
    from dsink.methods.dsink import DSink, DSinkParams

    counts = np.array([80, 40, 20, 10, 10, 10, 10, 10, 5, 5])
    labels = torch.arange(10).repeat_interleave(torch.as_tensor(counts))
    # f_L: the head's samples lean a little to class 9 in its balanced posterior (0.45 / 0.55); every other row clear
    p_imb = torch.eye(10)[labels] * 0.9 + 0.01
    p_imb[:40] = 0.0
    p_imb[:40, 0], p_imb[:40, 9] = 0.45, 0.55
    p_noise = torch.eye(10)[torch.where(labels >= 6, 0, labels)] * 0.9 + 0.01  # predicts none of 4 classes
    scores = {"imbalance": 0.9, "noise": 0.5}
    prior = torch.as_tensor(counts / counts.sum(), dtype=torch.float32)
    raw = DSink(DSinkParams(trust_fill="raw"), _collapsed_ctx(p_imb, p_noise, labels, counts, scores))
    moved = DSink(DSinkParams(trust_fill="prior"), _collapsed_ctx(p_imb, p_noise, labels, counts, scores))
    assert raw.unfit == moved.unfit == "noise"
    assert torch.equal(raw.p_noise, raw.p_imb)
    want = torch.softmax(p_imb.log() + prior.log(), dim=1)
    assert torch.allclose(moved.p_noise, want, atol=1e-6) and torch.equal(moved.p_imb, p_imb)
    assert raw.totals[9] == 5 + 40 and raw.totals[0] == 40  # the balanced argmax gives class 9 the head's rows
    assert moved.totals[9] == 5 and moved.totals[0] == 80  # moved to the prior, class 0 keeps them
    # f_L unfit: f_N, a training posterior, divided by the prior in f_L's balanced place
    back = DSink(DSinkParams(trust_fill="prior"), _collapsed_ctx(p_noise, p_imb, labels, counts,
                                                                 {"imbalance": 0.5, "noise": 0.9}))
    assert back.unfit == "imbalance"
    assert torch.allclose(back.p_imb, torch.softmax(p_imb.log() - prior.log(), dim=1), atol=1e-6)
    with pytest.raises(InputError, match="unknown trust_fill .shift.; valid trust_fills: prior, raw"):
        DSink(DSinkParams(trust_fill="shift"), _collapsed_ctx(p_imb, p_noise, labels, counts, scores))


def test_trust_margin_sets_how_far_below_a_collapsed_auxiliary_must_score():
    """trust_margin: a collapsed f_N (none of 4 of 10 classes) scoring 0.03 below f_L is kept at the default 0.05
    and replaced at 0; one scoring above f_L is kept at any margin; a negative margin is refused."""
    from dsink.errors import InputError
    from dsink.methods.dsink import TRUST_MARGIN, DSink, DSinkParams

    labels = torch.arange(10).repeat_interleave(20)
    counts = np.full(10, 20)
    p_imb = torch.eye(10)[labels] * 0.9 + 0.01
    p_noise = torch.eye(10)[torch.where(labels >= 6, 0, labels)] * 0.9 + 0.01
    close = {"imbalance": 0.60, "noise": 0.57}
    assert TRUST_MARGIN == 0.05 and DSinkParams().trust_margin == TRUST_MARGIN
    assert DSink(DSinkParams(), _collapsed_ctx(p_imb, p_noise, labels, counts, close)).unfit is None
    assert DSink(DSinkParams(trust_margin=0.0), _collapsed_ctx(p_imb, p_noise, labels, counts, close)).unfit == "noise"
    above = {"imbalance": 0.57, "noise": 0.60}
    assert DSink(DSinkParams(trust_margin=0.0), _collapsed_ctx(p_imb, p_noise, labels, counts, above)).unfit is None
    with pytest.raises(InputError, match="trust_margin must be in \\[0, 1\\].*got -0.1"):
        DSink(DSinkParams(trust_margin=-0.1), _collapsed_ctx(p_imb, p_noise, labels, counts, close))
