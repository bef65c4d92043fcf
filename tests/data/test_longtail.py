import numpy as np
import pytest

from dsink.data import longtail_counts, longtail_indices
from dsink.errors import InputError


@pytest.mark.parametrize("c,n_max,rho,total", [(10, 5000, 10, 20431), (10, 5000, 100, 12406),
                                               (100, 500, 10, 19573), (100, 500, 100, 10847)])
def test_cifar_lt_sizes_match_the_literature(c, n_max, rho, total):
    counts = longtail_counts(n_max, c, rho)
    assert sum(counts) == total
    assert counts[0] == n_max and counts[-1] == n_max // rho
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_step_profile():
    assert longtail_counts(1000, 10, 10, "step") == [1000] * 5 + [100] * 5
    assert longtail_counts(1000, 5, 4, "step") == [1000, 1000, 250, 250, 250]


def test_balanced_and_errors():
    assert longtail_counts(7, 3, 1) == [7, 7, 7]
    with pytest.raises(InputError, match=">= 1"):
        longtail_counts(100, 10, 0.5)
    with pytest.raises(InputError, match="profile"):
        longtail_counts(100, 10, 10, "linear")
    with pytest.raises(InputError, match="zero samples"):
        longtail_counts(10, 10, 100)


def test_subsample_by_true_label_is_seeded():
    y = np.repeat(np.arange(4), 50)
    counts = [50, 20, 8, 3]
    a, b, c = (longtail_indices(y, counts, s) for s in (0, 0, 1))
    assert np.array_equal(np.bincount(y[a], minlength=4), counts)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(np.unique(a)) == len(a) and np.all(np.diff(a) > 0)
    with pytest.raises(InputError, match="class 3 has 50"):
        longtail_indices(y, [10, 10, 10, 60], 0)
