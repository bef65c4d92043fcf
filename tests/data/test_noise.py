import numpy as np
import pytest

from dsink.data import SEMANTIC_MAPS, canonical_noise_mode, inject_noise, noise_report
from dsink.errors import InputError

C = 10
Y = np.repeat(np.arange(C), 1000)  # 10,000 balanced labels


def test_uniform_excl_true_flips_exactly_floor_rN_to_other_classes():
    z = inject_noise(Y, "uniform_excl_true", 0.4, C, 0)
    assert (z != Y).sum() == 4000
    rep = noise_report(Y, z, C)
    off = rep.transition[~np.eye(C, dtype=bool)]
    assert abs(rep.noise_rate - 0.4) < 1e-12
    assert np.all(np.abs(off - 0.4 / 9) < 0.015)  # uniform over the other classes


def test_uniform_incl_true_real_rate_is_r_times_c_minus_1_over_c():
    z = inject_noise(Y, "uniform_incl_true", 0.5, C, 3)
    assert abs((z != Y).mean() - 0.5 * 9 / 10) < 0.015
    assert (z != Y).mean() < 0.5


def test_class_size_prop_prefers_big_classes():
    y = np.concatenate([np.zeros(5000, int), np.ones(500, int), np.full(100, 2)])
    z = inject_noise(y, "class_size_prop", 0.3, 3, 0)
    assert (z != y).sum() == int(0.3 * len(y))
    t = noise_report(y, z, 3).transition
    # class 1 flips to class 0 (5000) far more often than to class 2 (100): ratio ~ 50
    assert t[1, 0] > 10 * t[1, 2]
    assert t[2, 0] > t[2, 1]


def test_pair_random_maps_each_class_to_one_other_class():
    z = inject_noise(Y, "pair_random", 0.3, C, 5)
    t = noise_report(Y, z, C).transition
    for c in range(C):
        targets = np.flatnonzero((t[c] > 0) & (np.arange(C) != c))
        assert len(targets) == 1 and targets[0] != c


def test_semantic_follows_the_class_map():
    z = inject_noise(Y, "semantic", 0.2, C, 0, class_map="cifar10")
    t = noise_report(Y, z, C).transition
    cmap = SEMANTIC_MAPS["cifar10"]
    for c in range(C):
        if cmap[c] < 0:
            assert t[c, c] == 1.0
        else:
            assert t[c, cmap[c]] == pytest.approx(0.2)
    assert t[9, 1] == pytest.approx(0.2) and t[3, 5] == pytest.approx(0.2)  # truck->automobile, cat->dog
    c100 = SEMANTIC_MAPS["cifar100"]
    assert c100[4] == 0 and c100[7] == 8 and c100[99] == 95


def test_seeds_and_aliases():
    a = inject_noise(Y, "rolt_sym", 0.3, C, 0)
    assert np.array_equal(a, inject_noise(Y, "uniform_excl_true", 0.3, C, 0))
    assert not np.array_equal(a, inject_noise(Y, "uniform_excl_true", 0.3, C, 1))
    assert canonical_noise_mode("tabasco_unif") == "uniform_incl_true"
    assert canonical_noise_mode("imb") == "class_size_prop"
    assert canonical_noise_mode("dividemix_asym") == "semantic"
    with pytest.raises(InputError, match="ambiguous"):
        canonical_noise_mode("sym")


def test_input_errors():
    with pytest.raises(InputError, match=r"\[0, 1\)"):
        inject_noise(Y, "uniform_excl_true", 1.0, C, 0)
    with pytest.raises(InputError, match="valid modes"):
        inject_noise(Y, "gaussian", 0.1, C, 0)
    with pytest.raises(InputError, match=r"\[0, 10\)"):
        inject_noise(np.array([0, 10]), "uniform_excl_true", 0.1, C, 0)
    with pytest.raises(InputError, match="integer"):
        inject_noise(np.array([0.5, 1.0]), "uniform_excl_true", 0.1, C, 0)
    with pytest.raises(InputError, match="class_map"):
        inject_noise(Y, "semantic", 0.1, C, 0)


def test_report_histograms():
    z = inject_noise(Y, "uniform_excl_true", 0.2, C, 0)
    r = noise_report(Y, z, C)
    assert r.true_counts.tolist() == [1000] * C
    assert r.noisy_counts.sum() == len(Y) and np.array_equal(r.noisy_counts, np.bincount(z, minlength=C))
    assert np.allclose(r.transition.sum(1), 1)
