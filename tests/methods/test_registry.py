"""Every registered method: one training step gives a finite loss and a gradient for every parameter."""

import dataclasses
import types

import numpy as np
import pytest
import torch

from dsink.config import MethodConfig
from dsink.methods import MethodContext, list_methods
from dsink.models import build_model
from dsink.train.inputs import build_method

C, N = 5, 64


def _ctx(epochs=4):
    return MethodContext(num_classes=C, class_counts=np.array([30, 15, 10, 6, 3]), num_train=N, epochs=epochs,
                         device=torch.device("cpu"), noise_rate=0.3)


def _aux_runs(tmp_path):
    """Two fake finished auxiliary run directories for D-SINK (the files a finished run holds)."""
    import json

    from dsink.config import RunConfig, save_config

    rng = np.random.default_rng(0)
    runs = []
    for name in ("fl", "fn"):
        d = tmp_path / name
        d.mkdir()
        save_config(RunConfig(), d / "config.yaml")
        (d / "run.json").write_text(json.dumps({"status": "finished"}))
        last = {k: 0.5 for k in ("top1", "macro_f1", "many_acc", "medium_acc", "few_acc")}
        (d / "eval.json").write_text(json.dumps({"data_fingerprint": "fp", "num_classes": C,
                                                 "last": {**last, "per_class_acc": [0.5] * C}}))
        np.savez(d / "predictions.npz", train_probs=rng.dirichlet(np.ones(C), N).astype(np.float32),
                 test_probs=rng.dirichlet(np.ones(C), 8).astype(np.float32), train_noisy=rng.integers(0, C, N))
        runs.append(str(d))
    return runs


@pytest.mark.parametrize("name", list_methods())
def test_one_step_every_method(name, tmp_path):
    params = {}
    if name in ("dsink", "kd"):
        fl, fn = _aux_runs(tmp_path)
        params = {"imbalance_run": fl, "noise_run": fn}
    if name == "dividemix":
        params = {"warmup_epochs": 2}  # epoch 3 below is a MixMatch step on a co-divided batch
    ctx = dataclasses.replace(_ctx(), fingerprint="fp")
    method = build_method(MethodConfig(name=name, params=params), ctx)
    torch.manual_seed(0)
    models = method.build_models(lambda: build_model("small_cnn", (1, 12, 12), C, width=4))

    class FakeTrainer:
        train_y = torch.randint(0, C, (N,))
        train_x = torch.randn(N, 1, 12, 12)
        device = torch.device("cpu")
        cfg = types.SimpleNamespace(train=types.SimpleNamespace(eval_batch_size=32))
        eval_batch_size = 32  # the TrainerView protocol (dsink.methods.TrainerView)

        def __init__(self):
            self.models = models

        def pipeline(self, x):
            return x

        def predict_probs(self, split):
            return torch.full((N, C), 1.0 / C)

        def batches(self, split, rows=None, batch_size=None):
            rows = torch.arange(N) if rows is None else rows
            for idx in rows.split(batch_size or self.eval_batch_size):
                yield idx, self.train_x[idx]

        def predict_logits(self, split="train", rows=None):
            return torch.zeros(N if rows is None else len(rows), C)

    for epoch in (0, 3):  # 3: after DRW starts / co-teaching ramps / DivideMix's warm-up
        method.on_epoch_start(epoch, FakeTrainer())
        idx = torch.arange(16)
        x, y = torch.randn(16, 1, 12, 12), torch.randint(0, C, (16,))
        if method.views > 1:
            x = [x + 0.1 * torch.randn_like(x) for _ in range(method.views)]
        for m in models.values():
            m.zero_grad()
        out = method.training_step(models, x, y, idx, epoch)
        assert torch.isfinite(out["loss"]) and out["loss"].dim() == 0
        out["loss"].backward()
        for mname, m in models.items():
            for pname, p in m.named_parameters():
                assert p.grad is not None and torch.isfinite(p.grad).all(), (name, mname, pname)
        method.on_epoch_end(epoch, FakeTrainer())  # as the engine does after every epoch's steps
    with torch.no_grad():
        logits = method.predict_logits(models, torch.randn(4, 1, 12, 12))
    assert logits.shape == (4, C) and torch.isfinite(logits).all()


def test_coteaching_keeps_exactly_the_scheduled_share():
    ctx = _ctx(epochs=20)
    m = build_method(MethodConfig(name="coteaching", params={"ramp_epochs": 10}), ctx)
    assert m.forget_rate(0) == 0 and m.forget_rate(5) == pytest.approx(0.15) and m.forget_rate(15) == pytest.approx(0.3)
    models = m.build_models(lambda: build_model("mlp", (8,), C, width=8))
    x, y = torch.randn(40, 8), torch.randint(0, C, (40,))
    out = m.training_step(models, x, y, torch.arange(40), 15)
    assert float(out["kept"]) == pytest.approx(28 / 40)  # 40 - round(0.3 * 40)
    # the samples net keeps are its peer's 28 smallest-loss ones
    with torch.no_grad():
        lp = torch.nn.functional.cross_entropy(models["peer"](x), y, reduction="none")
        la = torch.nn.functional.cross_entropy(models["net"](x), y, reduction="none")
    expect = la[torch.argsort(lp)[:28]].mean() + lp[torch.argsort(la)[:28]].mean()
    assert torch.allclose(out["loss"], expect, atol=1e-6)


def test_two_network_prediction_is_the_average_of_both():
    m = build_method(MethodConfig(name="coteaching"), _ctx())
    models = m.build_models(lambda: build_model("mlp", (8,), C, width=8))
    x = torch.randn(6, 8)
    with torch.no_grad():
        avg = (models["net"](x).softmax(1) + models["peer"](x).softmax(1)) / 2
        assert torch.allclose(m.predict_logits(models, x).softmax(1), avg, atol=1e-6)


def test_unknown_params_are_errors():
    from dsink.errors import InputError

    with pytest.raises(InputError, match="method.params.q"):
        build_method(MethodConfig(name="la", params={"q": 0.7}), _ctx())
