"""DSinkClassifier, the scikit-learn estimator (dsink.sklearn): scikit-learn's estimator checks, use in Pipeline,
cross_val_score and GridSearchCV, the label audit, pickling, reproducibility and bad input."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.datasets import make_blobs  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402
from sklearn.utils.fixes import parse_version  # noqa: E402

from dsink import DSinkClassifier  # noqa: E402
from dsink.sklearn import EXCLUDED_CHECKS  # noqa: E402

SK_VERSION = parse_version(parse_version(sklearn.__version__).base_version)
FAST = {"epochs": 10, "random_state": 0}  # tiny data: enough epochs to fit it, few enough to be quick


def _check_options() -> dict:
    """Every check runs and must pass, except EXCLUDED_CHECKS (expected to fail: xfail, strict where supported,
    so that an exclusion that starts passing is noticed)."""
    options = {}
    if SK_VERSION >= parse_version("1.6"):
        options["expected_failed_checks"] = lambda estimator: EXCLUDED_CHECKS
    if SK_VERSION >= parse_version("1.8"):
        options["xfail_strict"] = True
    return options


# a small instance: check_estimator fits it about 60 times (about 25 s on 2 cores)
@parametrize_with_checks([DSinkClassifier(epochs=5, random_state=0)], **_check_options())
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_excluded_checks_are_explained():
    assert all(isinstance(k, str) and k.startswith("check_") and len(v) > 20 for k, v in EXCLUDED_CHECKS.items())


@pytest.fixture(scope="module")
def pets():
    """Three separable classes with string labels."""
    X, y = make_blobs(n_samples=90, centers=3, n_features=4, random_state=0)
    return X * 10 + 50, np.array(["cat", "dog", "bird"])[y]  # unscaled features: the pipeline scales them


def test_string_labels_in_a_pipeline(pets):
    X, y = pets
    pipe = Pipeline([("scale", StandardScaler()), ("clf", DSinkClassifier(**FAST))]).fit(X, y)
    clf = pipe.named_steps["clf"]
    assert list(clf.classes_) == ["bird", "cat", "dog"] and clf.n_features_in_ == 4
    pred = pipe.predict(X)
    assert pred.dtype == y.dtype and set(pred) <= set(y)
    assert pipe.score(X, y) > 0.95
    proba = pipe.predict_proba(X)
    assert proba.shape == (90, 3) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)
    assert np.all(proba >= 0)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], pred)
    # columns follow classes_: each class's rows put their largest mean probability in its own column
    means = np.stack([proba[y == c].mean(0) for c in clf.classes_])
    np.testing.assert_array_equal(means.argmax(1), np.arange(3))


@pytest.mark.parametrize("labels", [np.array([10, -1, 3]), np.array([1.0, 2.0, -7.0]), np.array([True, False, True])[:2]])
def test_labels_of_any_type(labels):
    k = len(labels)
    X, y = make_blobs(n_samples=30 * k, centers=k, n_features=3, random_state=1)
    clf = DSinkClassifier(**FAST).fit(X, labels[y])
    np.testing.assert_array_equal(clf.classes_, np.unique(labels))
    assert clf.predict_proba(X).shape == (len(X), k)
    assert np.mean(clf.predict(X) == labels[y]) > 0.9


def long_tailed_blobs(seed: int = 0, rate: float = 0.2):
    """Five Gaussian classes of 300, 150, 75, 40 and 20 rows (rho = 15) in 8-D; ``rate`` of the labels flipped to
    another class uniformly (the noise mode uniform_excl_true). Returns X, true and given labels, flipped rows."""
    X, y = make_blobs(n_samples=[300, 150, 75, 40, 20], n_features=8, cluster_std=1.0, center_box=(-6, 6),
                      random_state=seed)
    rng = np.random.default_rng(seed)
    flip = rng.random(len(y)) < rate
    given = y.copy()
    given[flip] = (y[flip] + rng.integers(1, 5, flip.sum())) % 5
    names = np.array(["ant", "bee", "cat", "dog", "eel"])
    return X, names[y], names[given], np.flatnonzero(flip)


def test_label_issues_find_the_flipped_labels():
    X, true, given, flipped = long_tailed_blobs()
    clf = DSinkClassifier(val_fraction=0.0, random_state=0).fit(X, given)  # 0: every row is trained on and audited
    issues = clf.label_issues_
    assert set(issues) == {"index", "given_label", "suggested_label", "margin", "confidence", "given_prob"}
    idx = issues["index"]
    assert len(set(idx)) == len(idx) and np.all(np.diff(issues["margin"]) <= 0)  # ranked, most confident first
    np.testing.assert_array_equal(issues["given_label"], given[idx])
    assert np.all(issues["suggested_label"] != issues["given_label"])
    assert issues["suggested_label"].dtype == given.dtype
    hit = np.isin(idx, flipped)
    # measured on this problem (seeds 0-4): recall 0.97-1.00, precision 1.00, suggested = true label 0.99-1.00
    assert np.isin(flipped, idx).mean() >= 0.9, "recall"
    assert hit.mean() >= 0.9, "precision"
    assert np.mean(issues["suggested_label"][hit] == true[idx[hit]]) >= 0.9
    tail = np.isin(true[flipped], ["dog", "eel"])  # mislabelled samples of the two smallest classes
    assert np.isin(flipped[tail], idx).mean() >= 0.8
    assert clf.validation_scores_ == {}  # nothing held out
    assert clf.score(X, true) > 0.95


def test_validation_scores_and_held_out_rows(pets):
    X, y = pets
    clf = DSinkClassifier(**FAST).fit(X, y)  # val_fraction 0.1: 3 rows of each class held out
    assert set(clf.validation_scores_) == {"imbalance", "noise", "target"}
    for scores in clf.validation_scores_.values():
        assert set(scores) >= {"top1", "macro_f1"} and 0.0 <= scores["top1"] <= 1.0
    assert clf.validation_scores_["target"]["top1"] > 0.8
    assert set(clf.health_) == {"ok", "warnings", "scores"} and clf.health_["ok"] == (not clf.health_["warnings"])


def test_pickle_round_trip(pets):
    X, y = pets
    clf = DSinkClassifier(**FAST).fit(X, y)
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(copy.predict(X), clf.predict(X))
    assert copy.get_params() == clf.get_params()


def test_random_state_makes_fits_reproducible(pets):
    X, y = pets
    a = DSinkClassifier(**FAST).fit(X, y)
    b = DSinkClassifier(**FAST).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    for key in a.label_issues_:
        np.testing.assert_array_equal(a.label_issues_[key], b.label_issues_[key])
    assert a.validation_scores_ == b.validation_scores_
    c = DSinkClassifier(**{**FAST, "random_state": 1}).fit(X, y)
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))


def test_cross_val_score_and_grid_search(pets):
    X, y = pets
    pipe = Pipeline([("scale", StandardScaler()), ("clf", DSinkClassifier(**FAST))])
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.9
    grid = GridSearchCV(pipe, {"clf__target_method": ["dsink", "kd"]}, cv=2).fit(X, y)
    assert grid.best_params_["clf__target_method"] in ("dsink", "kd")
    assert grid.best_score_ > 0.9 and grid.score(X, y) > 0.9


def test_bad_input(pets):
    X, y = pets
    clf = DSinkClassifier(**FAST)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(bad, y)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        clf.fit(bad, y)
    with pytest.raises(ValueError, match="only one class"):
        clf.fit(X, np.full(len(X), "cat"))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.fit(X, y[:-1])
    with pytest.raises(ValueError, match="Unknown label type"):
        clf.fit(X, np.linspace(0, 1, len(X)))
    with pytest.raises(sklearn.exceptions.NotFittedError):
        clf.predict(X)
    clf.fit(X, y)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        clf.predict(bad.copy() * np.nan)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        DSinkClassifier(noise_method="nope").fit(X, y)
    with pytest.raises(ValueError, match="target_method must be a method that distils"):
        DSinkClassifier(target_method="la").fit(X, y)
    with pytest.raises(ValueError, match="val_fraction"):
        DSinkClassifier(val_fraction=1.0).fit(X, y)
    with pytest.raises(ValueError, match="epochs"):
        DSinkClassifier(epochs=0).fit(X, y)


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_import_stays_light_and_sklearn_optional():
    light = _python("import sys, dsink; assert 'sklearn' not in sys.modules, 'import dsink imported sklearn'; "
                    "assert 'DSinkClassifier' in dir(dsink) and 'DSinkClassifier' not in dsink.__all__")
    assert light.returncode == 0, light.stderr
    # scikit-learn missing (None in sys.modules makes its import fail): dsink works, the estimator says what to install
    blocked = _python("import sys; sys.modules['sklearn'] = None\n"
                      "from dsink import *\n"
                      "try:\n    from dsink import DSinkClassifier\n"
                      "except ImportError as e:\n    print(e)\n"
                      "else:\n    raise SystemExit('imported without scikit-learn')\n")
    assert blocked.returncode == 0, blocked.stderr
    assert "pip install dsink[sklearn]" in blocked.stdout
