"""DivideMix's pieces (loss GMM, Beta draws, warm-up loss, co-divided MixMatch step) and deferred re-sampling."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dsink.config import MethodConfig
from dsink.errors import InputError
from dsink.methods import MethodContext, build_method
from dsink.methods.dividemix import _sharpen, fit_gmm_1d
from dsink.models import build_model

C = 4


def _ctx(counts=(40, 20, 10, 5), epochs=10, seed=0):
    return MethodContext(num_classes=len(counts), class_counts=np.array(counts), num_train=int(sum(counts)),
                         epochs=epochs, device=torch.device("cpu"), noise_rate=0.3, seed=seed)


def test_gmm_separates_clean_from_noisy_losses():
    g = torch.Generator().manual_seed(0)
    clean = 0.1 + 0.05 * torch.randn(700, generator=g)
    noisy = 0.8 + 0.08 * torch.randn(300, generator=g)
    post = fit_gmm_1d(torch.cat([clean, noisy]))
    assert post.shape == (1000,)
    assert float((post[:700] > 0.5).float().mean()) > 0.99
    assert float((post[700:] < 0.5).float().mean()) > 0.99
    assert float(post[:700].mean()) > 0.95 and float(post[700:].mean()) < 0.05
    # degenerate input (all equal): no information, 0.5 everywhere
    assert torch.equal(fit_gmm_1d(torch.ones(10)), torch.full((10,), 0.5))


def test_beta_draws_have_the_beta_moments_and_are_seeded():
    m = build_method(MethodConfig(name="dividemix", params={"alpha": 4.0}), _ctx())
    draws = np.array([m._beta() for _ in range(4000)])
    assert ((draws > 0) & (draws < 1)).all()
    assert draws.mean() == pytest.approx(0.5, abs=0.01)
    assert draws.var() == pytest.approx(1 / 36, rel=0.1)  # a^2 / ((2a)^2 (2a + 1)) at a = 4
    again = build_method(MethodConfig(name="dividemix", params={"alpha": 4.0}), _ctx())
    assert [again._beta() for _ in range(5)] == pytest.approx(draws[:5].tolist())


def test_sharpen():
    p = torch.tensor([[0.6, 0.4], [0.5, 0.5]])
    s = _sharpen(p, 0.5)
    assert torch.allclose(s[0], torch.tensor([0.36, 0.16]) / 0.52) and torch.allclose(s[1], torch.tensor([0.5, 0.5]))


def test_warmup_step_is_ce_of_both_networks():
    m = build_method(MethodConfig(name="dividemix", params={"warmup_epochs": 3}), _ctx())
    torch.manual_seed(0)
    models = m.build_models(lambda: build_model("mlp", (6,), C, width=8))
    x, y = torch.randn(12, 6), torch.randint(0, C, (12,))
    with torch.no_grad():
        out = m.training_step(models, [x, x + 1], y, torch.arange(12), 0)
        want = F.cross_entropy(models["net"](x), y) + F.cross_entropy(models["peer"](x), y)
    assert float(out["loss"]) == pytest.approx(float(want), rel=1e-6)


def test_mixmatch_step_uses_the_peers_division():
    m = build_method(MethodConfig(name="dividemix", params={"warmup_epochs": 0, "lambda_u": 25.0}), _ctx())
    torch.manual_seed(0)
    models = m.build_models(lambda: build_model("mlp", (6,), C, width=8))
    n = 75
    # net's peer calls the first 30 samples clean, the peer's peer (net) the first 60
    m.clean_prob = {"peer": (torch.arange(n) < 30).float() * 0.9 + 0.05,
                    "net": (torch.arange(n) < 60).float() * 0.9 + 0.05}
    idx = torch.arange(n)
    x, y = torch.randn(n, 6), torch.randint(0, C, (n,))
    out = m.training_step(models, [x, x + 0.1], y, idx, 20)
    assert float(out["labelled_frac_net"]) == pytest.approx(30 / n)
    assert float(out["labelled_frac_peer"]) == pytest.approx(60 / n)
    assert math.isfinite(out["loss"].item()) and float(out["lx_net"]) > 0 and float(out["lu_net"]) > 0
    out["loss"].backward()
    for k, net in models.items():
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters()), k


def test_dividemix_rejects_bad_params():
    with pytest.raises(InputError, match="temperature > 0"):
        build_method(MethodConfig(name="dividemix", params={"temperature": 0.0}), _ctx())


def test_deferred_resampling_balances_classes_after_the_start():
    ctx = _ctx(counts=(400, 100, 40, 10), epochs=10)
    m = build_method(MethodConfig(name="cb_drs", params={"drw_start": 0.5}), ctx)
    labels = torch.tensor(np.repeat(np.arange(4), ctx.class_counts))
    g = torch.Generator().manual_seed(0)
    assert m.sample_indices(4, labels, g) is None  # before 0.5 x 10 epochs: the engine's permutation
    idx = m.sample_indices(5, labels, g)
    assert idx.shape == (550,) and int(idx.min()) >= 0 and int(idx.max()) < 550
    hist = np.bincount(labels[idx].numpy(), minlength=4) / 550
    # effective-number weights at beta 0.9999 are nearly 1/n_c: close to balanced
    assert np.abs(hist - 0.25).max() < 0.06


def test_a_warmup_as_long_as_the_run_is_warned(caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="dsink.methods.dividemix"):
        build_method(MethodConfig(name="dividemix", params={"warmup_epochs": 10}), _ctx(epochs=10))
    assert "dividemix: warmup_epochs=10 >= 10 epochs" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dsink.methods.dividemix"):
        build_method(MethodConfig(name="tabasco", params={"warmup_epochs": 3}), _ctx(epochs=10))
    assert caplog.text == ""
