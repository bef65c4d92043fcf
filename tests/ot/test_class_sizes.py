"""Confident learning's class sizes (class_totals=confident): values by hand, a blind model, errors."""

import numpy as np
import pytest
import torch

from dsink import surrogate_labels
from dsink.errors import InputError
from dsink.ot.surrogate import class_totals_from, confident_class_sizes


def test_confident_class_sizes_by_hand():
    # thresholds: class 0 mean(0.8, 0.6) = 0.7, class 1 mean(0.7, 0.2) = 0.45, class 2 0.4
    p = torch.tensor([[0.8, 0.1, 0.1],   # label 0: 0.8 >= 0.7 -> (0, 0)
                      [0.6, 0.3, 0.1],   # label 0: nothing reaches its threshold -> not counted
                      [0.2, 0.7, 0.1],   # label 1: (1, 1)
                      [0.75, 0.2, 0.05],  # label 1: 0.75 >= 0.7 -> (1, 0), a flipped label
                      [0.3, 0.3, 0.4]])  # label 2: (2, 2)
    y = torch.tensor([0, 0, 1, 1, 2])
    # rows rescaled to the label counts (2, 2, 1): [2, 0, 0], [1, 1, 0], [0, 0, 1]; column sums:
    assert confident_class_sizes(p, y).tolist() == [3.0, 1.0, 1.0]


def test_a_class_no_sample_reaches_keeps_its_label_count():
    p = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]])
    y = torch.tensor([0, 1, 1])  # class 1's threshold is 0.55: row 1 reaches it
    assert confident_class_sizes(p, y).tolist() == [1.0, 2.0]
    y = torch.tensor([0, 0, 0])  # no sample labelled 1: its threshold is infinite, its total 0
    assert confident_class_sizes(p, y).tolist()[1] == 0.0


def test_confident_totals_survive_a_blind_noise_model():
    rng = np.random.default_rng(0)
    n, c = 600, 4
    true = np.repeat(np.arange(c), [300, 180, 90, 30])
    noisy = np.where(rng.random(n) < 0.3, rng.integers(0, c, n), true)
    p_imb = np.full((n, c), 0.1)
    p_imb[np.arange(n), true] = 0.7  # right, flat
    p_noise = np.full((n, c), 0.05)
    p_noise[np.arange(n), np.minimum(true, 2)] = 0.85  # never predicts class 3
    p_imb, p_noise = p_imb / p_imb.sum(1, keepdims=True), p_noise / p_noise.sum(1, keepdims=True)
    blind = class_totals_from(torch.tensor(p_imb), "noise_argmax", n, False, p_noise=torch.tensor(p_noise))
    assert float(blind[3]) == 0.0
    t = class_totals_from(torch.tensor(p_imb), "confident", n, False, p_noise=torch.tensor(p_noise),
                          labels=torch.tensor(noisy))
    assert float(t.sum()) == pytest.approx(n)
    assert float(t[3]) > 0.5 * 30  # the tail class keeps a total near its size
    q = surrogate_labels(p_noise, p_imb, preset="dsink", class_totals="confident", labels=noisy)
    np.testing.assert_allclose(np.asarray(q).sum(0), np.asarray(t), rtol=1e-4)


def test_confident_totals_need_the_labels():
    p = np.full((4, 2), 0.5)
    with pytest.raises(InputError, match="noisy labels"):
        surrogate_labels(p, p, class_totals="confident")
    with pytest.raises(InputError, match="3 entries for 4 rows"):
        surrogate_labels(p, p, class_totals="confident", labels=np.array([0, 1, 1]))
