"""The bad-input corpus: every case ends with exit code 2 (CLI) or an InputError/ValueError (API), a message
naming the problem and the fix, no traceback, and nothing already written damaged."""

import gzip
import json

import numpy as np
import pytest

from dsink import surrogate_labels
from dsink.cli import main

MLP = ["--set", "model.name=mlp", "--set", "optim.epochs=1", "--set", "optim.batch_size=32",
       "--set", "data.imbalance_ratio=1", "--set", "data.noise_rate=0.2", "-q"]


def _npz(path, y=None, X=None, n=120, c=3, **extra):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 5)).astype(np.float32) if X is None else X
    y = rng.integers(0, c, n) if y is None else y
    np.savez(path, X=X, y=y, X_test=rng.normal(size=(30, 5)).astype(np.float32), y_test=rng.integers(0, c, 30), **extra)
    return path


def _cli(capsys, *args):
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize("case,needle", [
    ("float_labels", "must be integer class indices"),
    ("negative_labels", "must lie in [0, 3)"),
    ("nan_features", "NaN or Inf features"),
    ("truncated", "cannot be read"),
    ("missing_keys", "lacks X_test"),
    ("wrong_length", "one entry per row"),
])
def test_bad_npz(tmp_path, capsys, case, needle):
    p = tmp_path / "d.npz"
    rng = np.random.default_rng(1)
    if case == "float_labels":
        _npz(p, y=rng.integers(0, 3, 120) + 0.5)
    elif case == "negative_labels":
        y = rng.integers(0, 3, 120)
        y[5] = -1
        _npz(p, y=y)
    elif case == "nan_features":
        X = rng.normal(size=(120, 5)).astype(np.float32)
        X[3, 2] = np.nan
        _npz(p, X=X)
    elif case == "truncated":
        _npz(p)
        p.write_bytes(p.read_bytes()[:100])
    elif case == "missing_keys":
        np.savez(p, X=np.zeros((4, 2)), y=np.zeros(4, int))
    else:
        _npz(p, y=rng.integers(0, 3, 119))
    code, err = _cli(capsys, "data", "describe", "--dataset", "npz", "--root", str(p))
    assert code == 2 and needle in err, err


@pytest.mark.parametrize("case,needle", [
    ("no_header", "needs a header with columns path,label"),
    ("missing_image", "cannot"),
    ("negative", "negative labels"),
    ("missing_csv", "not found; set data.csv_path"),
])
def test_bad_image_folder_csv(tmp_path, capsys, case, needle):
    from PIL import Image

    for i in range(4):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    csv_path = tmp_path / "labels.csv"
    rows = ["path,label"] + [f"{i}.png,{i % 2}" for i in range(4)]
    if case == "no_header":
        rows = rows[1:]
    elif case == "missing_image":
        rows.append("gone.png,1")
    elif case == "negative":
        rows.append("0.png,-1")
    if case != "missing_csv":
        csv_path.write_text("\n".join(rows) + "\n")
    code, err = _cli(capsys, "data", "describe", "--dataset", "image_folder", "--root", str(tmp_path),
                     "--set", f"data.csv_path={csv_path}")
    assert code == 2 and needle in err, err


def test_truncated_idx_file(tmp_path, capsys):
    src = "/usr/share/datasets/fashion-mnist"
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        data = gzip.open(f"{src}/{name}.gz").read()
        (tmp_path / name).write_bytes(data[: len(data) // 2] if name.startswith("train-images") else data)
    code, err = _cli(capsys, "data", "describe", "--root", str(tmp_path))
    assert code == 2 and "truncated" in err and "train-images" in err


def test_corrupt_cifar_n_file(tmp_path, capsys, fake_cifar10):
    bad = tmp_path / "CIFAR-10_human.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    code, err = _cli(capsys, "data", "describe", "--dataset", "cifar10", "--root", str(fake_cifar10[0]),
                     "--noise-mode", "human", "--set", f"data.cifar_n_path={bad}")
    assert code == 2 and "CIFAR-N file" in err and "re-download" in err


def test_runs_checkpoints_and_auxiliaries(tmp_path, capsys):
    data = _npz(tmp_path / "d.npz", n=200, y_true=np.random.default_rng(0).integers(0, 3, 200))
    base = ["--dataset", "npz", "--root", str(data), *MLP]
    assert main(["train", "--method", "la", *base, "--out", str(tmp_path / "la")]) == 0
    assert main(["train", "--method", "gce", *base, "--out", str(tmp_path / "gce")]) == 0
    assert main(["train", "--method", "gce", *base, "--data-seed", "7", "--out", str(tmp_path / "gce7")]) == 0
    capsys.readouterr()
    # unknown method: the valid names are listed
    code, err = _cli(capsys, "train", "--method", "nope", *base, "--out", str(tmp_path / "x"))
    assert code == 2 and "valid methods: bs, cb_drs" in err and not (tmp_path / "x").exists()
    # auxiliaries made on other data (another data seed) are refused
    code, err = _cli(capsys, "distill", "--imbalance-run", str(tmp_path / "la"), "--noise-run", str(tmp_path / "gce7"),
                     "--out", str(tmp_path / "d1"), "-q")
    assert code == 2 and "trained on different data" in err
    # corrupt predictions of an auxiliary
    (tmp_path / "la" / "predictions.npz").write_bytes(b"garbage")
    code, err = _cli(capsys, "distill", "--imbalance-run", str(tmp_path / "la"), "--noise-run", str(tmp_path / "gce"),
                     "--out", str(tmp_path / "d2"), "-q")
    assert code == 2 and "corrupt" in err and "dsink eval" in err
    # a finished run is not overwritten; resuming with another config is refused; files stay as they were
    before = {p.name: p.read_bytes() for p in (tmp_path / "gce").iterdir() if p.is_file()}
    code, err = _cli(capsys, "train", "--method", "gce", *base, "--out", str(tmp_path / "gce"))
    assert code == 2 and "--force" in err
    code, err = _cli(capsys, "train", "--method", "gce", *base, "--set", "optim.lr=0.5", "--resume", "--out", str(tmp_path / "gce"))
    assert code == 2 and "different config (differs in optim.lr)" in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "gce").iterdir() if p.is_file()} == before
    # a truncated checkpoint: resume and eval say so and name the fix
    ck = tmp_path / "gce" / "checkpoints" / "last.pt"
    ck.write_bytes(ck.read_bytes()[:200])
    code, err = _cli(capsys, "eval", str(tmp_path / "gce"))
    assert code == 2 and "corrupt or truncated" in err
    json.loads((tmp_path / "gce" / "eval.json").read_text())  # the old evaluation is untouched


@pytest.mark.parametrize("bad,needle", [
    ("nan", "NaN"),
    ("unnormalised", "sum to 1"),
    ("negative", "negative"),
    ("shape", "shape"),
])
def test_surrogate_labels_refuses_bad_probabilities(bad, needle):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), 50)
    q = p.copy()
    if bad == "nan":
        q[3, 1] = np.nan
    elif bad == "unnormalised":
        q = q * 2
    elif bad == "negative":
        q[0, 0] = -0.1
    else:
        q = q[:40]
    with pytest.raises(ValueError, match=needle):
        surrogate_labels(q, p)
