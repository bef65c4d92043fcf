import math

import torch
import torch.nn.functional as F

from dsink.losses import (class_balanced_weights, gce, ldam_loss, ldam_margins, log_prior, logit_adjusted_ce, sce,
                          soft_ce)

torch.manual_seed(0)
LOGITS = torch.randn(16, 5)
Y = torch.randint(0, 5, (16,))
COUNTS = torch.tensor([500.0, 200, 50, 10, 2])


def test_la_with_tau_zero_is_ce_and_bs_is_ce_on_shifted_logits():
    lp = log_prior(COUNTS, "cpu")
    assert torch.allclose(logit_adjusted_ce(LOGITS, Y, lp, 0.0), F.cross_entropy(LOGITS, Y))
    shifted = LOGITS + torch.log(COUNTS / COUNTS.sum())
    assert torch.allclose(logit_adjusted_ce(LOGITS, Y, lp, 1.0), F.cross_entropy(shifted, Y))
    # hand value for one sample: -log softmax(z + log pi)_y
    z, y = LOGITS[:1], Y[:1]
    s = z[0] + lp
    assert math.isclose(float(logit_adjusted_ce(z, y, lp)), float(-(s[y] - s.logsumexp(0))), rel_tol=1e-5)


def test_gce_tends_to_ce_and_matches_its_formula():
    assert torch.allclose(gce(LOGITS, Y, 1e-4), F.cross_entropy(LOGITS, Y), atol=1e-3)
    p_y = LOGITS.softmax(1)[torch.arange(16), Y]
    assert torch.allclose(gce(LOGITS, Y, 0.7), ((1 - p_y ** 0.7) / 0.7).mean())
    assert torch.allclose(gce(LOGITS, Y, 1.0), (1 - p_y).mean())  # q = 1: MAE


def test_sce_reverse_term():
    p_y = LOGITS.softmax(1)[torch.arange(16), Y]
    rce = (-math.log(1e-4) * (1 - p_y)).mean()
    assert torch.allclose(sce(LOGITS, Y, 0.0, 1.0), rce)
    assert torch.allclose(sce(LOGITS, Y, 0.1, 1.0), 0.1 * F.cross_entropy(LOGITS, Y) + rce)
    # explicitly: -sum_k p_k log(clip(onehot, 1e-4, 1))
    oh = F.one_hot(Y, 5).float().clamp(1e-4, 1)
    assert torch.allclose(rce, -(LOGITS.softmax(1) * oh.log()).sum(1).mean())


def test_ldam_margins_scale_as_n_to_minus_quarter():
    m = ldam_margins(COUNTS, 0.5)
    assert math.isclose(float(m.max()), 0.5, rel_tol=1e-6) and int(m.argmax()) == 4
    ratio = m / COUNTS.pow(-0.25)
    assert torch.allclose(ratio, ratio[0].expand(5), rtol=1e-5)
    cos = torch.rand(16, 5) * 2 - 1
    expect = F.cross_entropy(30 * (cos - F.one_hot(Y, 5) * m[Y][:, None]), Y)
    assert torch.allclose(ldam_loss(cos, Y, m, 30.0), expect)


def test_class_balanced_weights():
    w = class_balanced_weights(COUNTS, 0.9999)
    raw = (1 - 0.9999) / (1 - 0.9999 ** COUNTS.double())
    assert torch.allclose(w.double(), raw / raw.sum() * 5, rtol=1e-5)
    assert bool((w[1:] > w[:-1]).all())  # rarer classes weigh more


def test_soft_ce_with_one_hot_is_ce():
    assert torch.allclose(soft_ce(LOGITS, F.one_hot(Y, 5).float()), F.cross_entropy(LOGITS, Y))


def test_soft_ce_has_the_composite_expressions_bits():
    """soft_ce must give the gradient of the plain expression bit for bit (so a distillation trains as with it, step
    for step) and its loss to float32's last bit (torch sums the rows in another order), with and without the logit
    shift, for a scaled loss and for a float64 target."""
    torch.manual_seed(1)
    target = torch.rand(100, 10)  # not a power of two, nor the scale below: the division by B must round alike
    target /= target.sum(1, keepdim=True)
    shift = torch.randn(10)
    for sh in (None, shift):
        for scale in (1.0, 0.3):
            z1 = (3 * torch.randn(100, 10)).requires_grad_()
            z2 = z1.detach().clone().requires_grad_()
            fused = soft_ce(z1, target, sh)
            plain = -(target * F.log_softmax(z2 if sh is None else z2.float() + sh, dim=1)).sum(1).mean()
            (scale * fused).backward()
            (scale * plain).backward()
            assert torch.equal(z1.grad, z2.grad)
            assert abs(fused.item() - plain.item()) <= 2 * torch.finfo(torch.float32).eps * abs(plain.item())
    assert torch.equal(soft_ce(z1, target.double(), shift), soft_ce(z1, target, shift))
    # a target that needs its own gradient gets one
    t = target.clone().requires_grad_()
    soft_ce(torch.randn(100, 10), t, shift).backward()
    assert t.grad is not None and torch.isfinite(t.grad).all()
