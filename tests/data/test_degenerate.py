"""Degenerate data (one class, empty splits, classes without training samples, labels that are not class
indices) is refused with an InputError naming the problem and the fix, from the library and from the CLI,
before any run directory is written."""

import warnings

import numpy as np
import pytest

from dsink.cli import main
from dsink.config import DataConfig
from dsink.data import build_data, load_npz
from dsink.data.noise import check_labels
from dsink.data.images import load_image_folder
from dsink.errors import InputError

from ..conftest import write_fake_cifar_n


def _npz(path, X=None, y=None, X_test=None, y_test=None, n=60, c=3, **extra):
    """A small feature dataset with ``c`` classes; any array can be replaced."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 4)).astype(np.float32) if X is None else X
    y = np.arange(n) % c if y is None else y
    X_test = rng.normal(size=(12, 4)).astype(np.float32) if X_test is None else X_test
    y_test = np.arange(len(X_test)) % c if y_test is None else y_test
    np.savez(path, X=X, y=y, X_test=X_test, y_test=y_test, **extra)
    return path


def _stray_label():
    y = np.arange(60) % 10
    y[7] = 50
    return y


# name -> (npz arrays, text the message must hold)
NPZ_CASES = {
    "one_class": (dict(y=np.zeros(60, int), y_test=np.zeros(12, int)), "needs at least 2 classes"),
    "test_class_without_training_samples": (
        dict(y_test=np.array([0, 1, 2, 3] * 3)),
        "class 3 with no training samples; a class with no training samples cannot be learned"),
    "stray_label": (dict(y=_stray_label(), c=10), "40 of the 51 classes"),
    "empty_train": (dict(X=np.zeros((0, 4), np.float32), y=np.zeros(0, int)), "X and y are empty"),
    "string_labels": (dict(y=np.array(["cat", "dog", "eel"] * 20)), "array 'y' holds strings"),
    "fractional_labels": (dict(y=np.arange(60) % 3 + 0.5), "array 'y' holds non-whole numbers such as 0.5"),
    "nan_labels": (dict(y_test=np.array([0.0, 1.0, np.nan] * 4)), "array 'y_test' holds NaN or Inf"),
    "bool_labels": (dict(y=np.arange(60) % 2 == 0), "array 'y' holds booleans"),
    "object_labels": (dict(y=np.array([0, "a", None] * 20, dtype=object)), "array 'y' holds Python objects"),
    "string_features": (dict(X=np.array([["a", "b", "c", "d"]] * 60)), "X has dtype <U1; features must be numbers"),
    "no_features": (dict(X=np.zeros((60, 0)), X_test=np.zeros((12, 0))), "no feature columns"),
}
FIXES = {"stray_label": "contiguous class indices 0..K-1", "string_labels": "integer class indices 0..K-1",
         "fractional_labels": "integer class indices 0..K-1"}


@pytest.fixture(params=sorted(NPZ_CASES))
def bad_npz(request, tmp_path):
    arrays, needle = NPZ_CASES[request.param]
    return _npz(tmp_path / f"{request.param}.npz", **arrays), needle, FIXES.get(request.param, "")


def _cli(capsys, *args):
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_library_refuses(bad_npz):
    path, needle, fix = bad_npz
    with pytest.raises(InputError, match="npz file") as e:
        load_npz(path)
    assert needle in str(e.value) and fix in str(e.value) and str(path) in str(e.value)
    with pytest.raises(InputError) as e:  # the path every run takes
        build_data(DataConfig(dataset="npz", root=str(path), imbalance_ratio=1, val_fraction=0))
    assert needle in str(e.value)


def test_cli_describe_and_train_refuse(bad_npz, tmp_path, capsys):
    path, needle, _ = bad_npz
    code, err = _cli(capsys, "data", "describe", "--dataset", "npz", "--root", str(path))
    assert code == 2 and needle in err, err
    run = tmp_path / "run"
    code, err = _cli(capsys, "train", "--dataset", "npz", "--root", str(path), "--out", str(run), "-q",
                     "--set", "optim.epochs=1")
    assert code == 2 and needle in err, err
    assert not run.exists()  # data errors surface before the run directory is written


def test_stray_label_message_names_the_empty_classes(tmp_path):
    # labels 0..9 and one stray 50: 51 classes, of which 10..49 have no sample
    with pytest.raises(InputError, match=r"no training samples: 10, 11, 12, 13, 14, 15, 16, 17, \.\.\. \(32 more\)"):
        load_npz(_npz(tmp_path / "d.npz", y=_stray_label(), c=10))


def test_whole_number_float_labels_are_accepted(tmp_path):
    src = load_npz(_npz(tmp_path / "d.npz", y=(np.arange(60) % 3).astype(np.float64), y_true=np.arange(60) % 3))
    assert src.train_labels.dtype == np.int64 and src.num_classes == 3
    assert src.train_labels.tolist() == (np.arange(60) % 3).tolist()


def test_a_plain_npy_file_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros((3, 2)))
    with pytest.raises(InputError, match="not an .npz archive"):
        load_npz(path)


# ---------------------------------------------------------------- image folder
def _image_folder(tmp_path, train_labels, test_labels):
    from PIL import Image

    rows = ["path,label,split"]
    pairs = [(lab, "train") for lab in train_labels] + [(lab, "test") for lab in test_labels]
    for i, (lab, split) in enumerate(pairs):
        Image.fromarray(np.full((4, 4), 10 * i, np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{lab},{split}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "labels.csv"


@pytest.mark.parametrize("train,test,needle", [
    (["cat"] * 4, ["cat"], "needs at least 2 classes"),
    (["0", "1", "0", "1"], ["0", "1"], None),
    (["0", "1", "5", "1"], ["0", "1"], "3 of the 6 classes 0..5"),
    (["0", "1", "0", "1"], ["0", "2"], "class 2 with no training samples"),
    (["cat", "dog", "cat"], ["eel"], "class 'eel' with no training samples"),
])
def test_image_folder_classes(tmp_path, capsys, train, test, needle):
    csv_path = _image_folder(tmp_path, train, test)
    if needle is None:
        assert load_image_folder(tmp_path, csv_path).num_classes == 2
        return
    with pytest.raises(InputError, match="label CSV") as e:
        load_image_folder(tmp_path, csv_path)
    assert needle in str(e.value)
    code, err = _cli(capsys, "data", "describe", "--dataset", "image_folder", "--root", str(tmp_path),
                     "--set", f"data.csv_path={csv_path}")
    assert code == 2 and needle in err, err


# ---------------------------------------------------------------- the label validator
@pytest.mark.parametrize("labels,needle", [
    (["a", "b"], "holds strings"),
    ([b"a", b"b"], "holds byte strings"),
    (np.array([1, None], dtype=object), "holds Python objects"),
    ([[0, 1], [2]], "cannot be read as an array"),
    ([True, False], "holds booleans"),
    ([1 + 0j, 2], "holds complex numbers"),
    ([0.0, np.inf], "holds NaN or Inf"),
    ([0.0, 1.25], "non-whole numbers such as 1.25"),
    ([0.0, 1e300], "too large"),
    (np.array([0, 2**63 + 5], dtype=np.uint64), "too large"),
    ([[0, 1]], "1-D array"),
    ([0, 3], "must lie in [0, 3)"),
    ([-1, 0], "must lie in [0, 3)"),
])
def test_check_labels_refuses(labels, needle):
    with pytest.raises(InputError) as e:
        check_labels(labels, 3, "y")
    assert needle in str(e.value) and str(e.value).startswith("y ")


def test_check_labels_accepts():
    assert check_labels(np.array([0.0, 2.0]), 3).dtype == np.int64
    assert check_labels(np.array([0, 2], dtype=np.uint8), 3).tolist() == [0, 2]
    assert check_labels([], 3).tolist() == []
    assert check_labels([7, 9], None).tolist() == [7, 9]  # no range check without a class count


# ---------------------------------------------------------------- after subsampling and noise
def test_class_without_noisy_training_label_warns(tmp_path, fake_cifar10, monkeypatch):
    root, clean, _ = fake_cifar10
    human = np.where(clean == 3, 5, clean)  # the annotators never say class 3
    write_fake_cifar_n(tmp_path / "cn" / "CIFAR-10_human.pt", clean, {"worse_label": human})
    monkeypatch.setenv("DSINK_CIFAR_N_DIR", str(tmp_path / "cn"))
    cfg = DataConfig(dataset="cifar10", root=str(root), imbalance_ratio=1, noise_mode="human",
                     human_label="worse_label", val_fraction=0.2)
    with pytest.warns(UserWarning, match="no training sample is labelled class 3; the model cannot learn"):
        b = build_data(cfg)
    assert 3 not in b.train_y
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_data(DataConfig(dataset="cifar10", root=str(root), imbalance_ratio=1, noise_mode="none"))


def test_features_without_a_test_split_are_evaluated_on_validation(tmp_path):
    """No clean test set is a valid case (as for image folders): the source has none, and building the data needs
    a validation split to evaluate on."""
    from dsink.config import DataConfig
    from dsink.data import build_data

    path = _npz(tmp_path / "no_test.npz", X_test=np.zeros((0, 4), np.float32), y_test=np.zeros(0, int))
    src = load_npz(path)
    assert not src.has_test and src.num_classes == 3
    cfg = DataConfig(dataset="npz", root=str(path), noise_mode="none", imbalance_ratio=1, cache_dir=str(tmp_path))
    assert len(build_data(cfg).val_y) > 0
    with pytest.raises(InputError, match="no clean test split and no validation split"):
        build_data(DataConfig(dataset="npz", root=str(path), noise_mode="none", imbalance_ratio=1, val_fraction=0.0,
                              cache_dir=str(tmp_path)))
