import gzip
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dsink.config import DataConfig
from dsink.data import build_data, describe, load_cifar, load_cifar_n, load_npz, make_labels, read_idx
from dsink.data.noise import noise_report
from dsink.data.images import load_image_folder
from dsink.data.sources import find_cifar_n
from dsink.errors import InputError

from ..conftest import CIFAR_N_DIR, write_fake_cifar_n

SRC = Path(__file__).resolve().parents[2] / "src"

# The published realised rates are checked on the real files, an extra tier that needs them.
needs_real_cifar_n = pytest.mark.skipif(
    CIFAR_N_DIR is None,
    reason="real CIFAR-N label files not found: set DSINK_CIFAR_N_DIR to the folder holding CIFAR-10_human.pt "
    "(CI sets it to ../shared/data/cifar-n)",
)


def _flip(clean: np.ndarray, n_flip: int, num_classes: int, seed: int = 0) -> np.ndarray:
    """``clean`` with exactly ``n_flip`` entries moved to the next class."""
    noisy = clean.copy()
    pick = np.random.default_rng(seed).choice(len(clean), n_flip, replace=False)
    noisy[pick] = (clean[pick] + 1) % num_classes
    return noisy


# ---------------------------------------------------------------- CIFAR-N (generated files in the real format)
def test_cifar_n_generated_file_round_trip_and_realised_rate(tmp_path):
    clean = np.repeat(np.arange(10), 100)
    worse, aggre = _flip(clean, 402, 10), _flip(clean, 90, 10, seed=1)
    path = write_fake_cifar_n(tmp_path / "CIFAR-10_human.pt", clean, {"worse_label": worse, "aggre_label": aggre})
    labels = load_cifar_n(path)
    assert sorted(labels) == ["aggre_label", "clean_label", "worse_label"]
    assert all(v.dtype == np.int64 for v in labels.values())
    assert np.array_equal(labels["clean_label"], clean) and np.array_equal(labels["worse_label"], worse)
    assert float((labels["worse_label"] != labels["clean_label"]).mean()) == 0.402
    assert noise_report(labels["clean_label"], labels["aggre_label"], 10).noise_rate == 0.09


def test_human_noise_realised_rate_from_generated_file(tmp_path, fake_cifar10, monkeypatch):
    root, clean, _ = fake_cifar10
    worse = _flip(clean, 120, 10)
    write_fake_cifar_n(tmp_path / "cn" / "CIFAR-10_human.pt", clean, {"worse_label": worse})
    monkeypatch.setenv("DSINK_CIFAR_N_DIR", str(tmp_path / "cn"))
    d = describe(DataConfig(dataset="cifar10", root=str(root), imbalance_ratio=1, noise_mode="human",
                            human_label="worse_label", val_fraction=0))
    assert d["num_samples"] == 300 and d["noise_rate"] == 0.4
    assert d["true_counts"] == [30] * 10


def test_cifar_n_lt_is_subsampled_on_the_clean_label():
    rng = np.random.default_rng(0)
    clean = rng.permutation(np.repeat(np.arange(10), 500))
    worse = np.where(rng.random(len(clean)) < 0.5, rng.integers(0, 10, len(clean)), clean)
    cfg = DataConfig(dataset="cifar10", imbalance_ratio=10, noise_mode="human", human_label="worse_label",
                     val_fraction=0)
    ls = make_labels(clean, 10, cfg, human_labels=worse)
    counts = [500, 387, 299, 232, 179, 139, 107, 83, 64, 50]  # floor(500 * 10 ** (-c / 9))
    assert ls.counts == counts and len(ls.indices) == sum(counts)
    assert np.bincount(clean[ls.indices]).tolist() == counts
    assert np.bincount(ls.noisy).tolist() != counts  # the noisy labels were not the subsampling key
    assert np.array_equal(ls.noisy, worse[ls.indices])


def test_cifar_n_loader_refuses_code_and_corrupt_files(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"clean_label": Evil()}))
    with pytest.raises(InputError, match="refusing to load builtins.print"):
        load_cifar_n(bad)
    clean = np.random.default_rng(0).integers(0, 10, 5000)
    good = write_fake_cifar_n(tmp_path / "good.pt", clean, {"worse_label": clean})
    data = good.read_bytes()
    assert len(data) > 40000
    for i, cut in enumerate((5000, len(data) // 2, len(data) - 10)):
        trunc = tmp_path / f"trunc{i}.pt"
        trunc.write_bytes(data[:cut])
        with pytest.raises(InputError, match="corrupt"):
            load_cifar_n(trunc)
    with pytest.raises(InputError, match="not found"):
        load_cifar_n(tmp_path / "missing.pt")


def test_find_cifar_n_search_order(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("DSINK_CACHE", str(cache))
    monkeypatch.delenv("DSINK_CIFAR_N_DIR", raising=False)
    with pytest.raises(InputError, match="DSINK_CIFAR_N_DIR") as e:
        find_cifar_n("cifar10", None, False)
    assert "CIFAR-10_human.pt not found" in str(e.value) and "data.cifar_n_path" in str(e.value)
    clean = np.arange(10)
    env_file = write_fake_cifar_n(tmp_path / "cn" / "CIFAR-10_human.pt", clean, {"worse_label": clean})
    monkeypatch.setenv("DSINK_CIFAR_N_DIR", str(tmp_path / "cn"))
    assert find_cifar_n("cifar10", None, False) == env_file
    cached = write_fake_cifar_n(cache / "cifar-n" / "CIFAR-10_human.pt", clean, {"worse_label": clean})
    assert find_cifar_n("cifar10", None, False) == env_file  # the variable comes before the cache
    assert find_cifar_n("cifar10", str(tmp_path / "x.pt"), False) == tmp_path / "x.pt"  # data.cifar_n_path first
    with pytest.raises(InputError, match=str(tmp_path / "cn")):  # a folder lacking the file is named
        find_cifar_n("cifar100", None, False)
    monkeypatch.setenv("DSINK_CIFAR_N_DIR", str(tmp_path / "empty"))
    assert find_cifar_n("cifar10", None, False) == cached


def test_no_source_file_refers_to_a_shared_folder():
    files = [f for f in SRC.rglob("*") if f.is_file() and "__pycache__" not in f.parts
             and not any(part.endswith(".egg-info") for part in f.parts)]
    assert any(f.name == "sources.py" for f in files)
    hits = [str(f.relative_to(SRC)) for f in files if b"shared/" in f.read_bytes()]
    assert hits == []


# ---------------------------------------------------------------- CIFAR-N (the official files, extra tier)
@needs_real_cifar_n
@pytest.mark.parametrize("key,rate", [("worse_label", 0.4021), ("aggre_label", 0.0901), ("random_label1", 0.1723)])
def test_real_cifar10n_realised_rates(key, rate):
    labels = load_cifar_n(CIFAR_N_DIR / "CIFAR-10_human.pt")
    assert len(labels["clean_label"]) == 50000
    assert round(float((labels[key] != labels["clean_label"]).mean()), 4) == rate


@needs_real_cifar_n
def test_real_cifar100n_realised_rate():
    labels = load_cifar_n(CIFAR_N_DIR / "CIFAR-100_human.pt")
    assert round(float((labels["noisy_label"] != labels["clean_label"]).mean()), 4) == 0.4020
    assert labels["clean_label"].max() == 99


@needs_real_cifar_n
def test_real_cifar10n_lt_is_subsampled_on_the_clean_label(monkeypatch):
    monkeypatch.setenv("DSINK_CIFAR_N_DIR", str(CIFAR_N_DIR))
    labels = load_cifar_n(find_cifar_n("cifar10", None, False))
    cfg = DataConfig(dataset="cifar10", imbalance_ratio=100, noise_mode="human", human_label="worse_label",
                     val_fraction=0)
    ls = make_labels(labels["clean_label"], 10, cfg, human_labels=labels["worse_label"])
    assert len(ls.indices) == 12406
    assert np.bincount(labels["clean_label"][ls.indices]).tolist()[0] == 5000
    assert np.array_equal(ls.noisy, labels["worse_label"][ls.indices])


# ---------------------------------------------------------------- CIFAR on-disk format
def test_load_fake_cifar10(fake_cifar10):
    root, labels, data = fake_cifar10
    src = load_cifar("cifar10", str(root))
    assert src.train_x.shape == (300, 3, 32, 32) and src.train_x.dtype == np.uint8
    assert np.array_equal(src.train_labels, labels)
    assert np.array_equal(src.train_x[7].reshape(-1), data[7])  # CHW layout of the raw rows
    assert src.test_x.shape == (50, 3, 32, 32) and src.class_names[3] == "c3"


def test_build_cifar_lt_from_disk(fake_cifar10):
    root, labels, _ = fake_cifar10
    cfg = DataConfig(dataset="cifar10", root=str(root), imbalance_ratio=10, noise_mode="asym", noise_rate=0.4,
                     val_fraction=0.0)
    d = describe(cfg)
    assert d["profile_counts"] == [30, 23, 17, 13, 10, 8, 6, 5, 3, 3]  # floor(30 * 10 ** (-c / 9))
    assert d["true_counts"] == d["profile_counts"]
    b = build_data(cfg)
    assert b.train_x.shape == (118, 3, 32, 32)
    assert np.array_equal(labels[b.train_index], b.train_true)


def test_cifar_missing_and_corrupt(tmp_path, fake_cifar10):
    with pytest.raises(InputError, match="data.download=true"):
        load_cifar("cifar10", str(tmp_path / "nowhere"))
    root, _, _ = fake_cifar10
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(InputError, match="corrupt"):
        load_cifar("cifar10", str(root))
    import pickle

    with open(root / "cifar-10-batches-py" / "data_batch_3", "wb") as f:  # a whole pickle of the wrong shape
        pickle.dump({b"data": np.zeros((5, 100), np.uint8), b"labels": [0] * 5}, f)
    with pytest.raises(InputError, match="does not hold 3x32x32 images"):
        load_cifar("cifar10", str(root))
    with open(root / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((5, 3072), np.uint8), b"labels": [0] * 4}, f)
    with pytest.raises(InputError, match="5 images but 4 labels"):
        load_cifar("cifar10", str(root))


# ---------------------------------------------------------------- IDX, npz, image folder
def _idx_bytes(arr):
    return bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


def test_read_idx_plain_gzip_and_truncated(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx_bytes(a))
    with gzip.open(tmp_path / "a.gz", "wb") as f:
        f.write(_idx_bytes(a))
    assert np.array_equal(read_idx(tmp_path / "a"), a) and np.array_equal(read_idx(tmp_path / "a.gz"), a)
    (tmp_path / "t").write_bytes(_idx_bytes(a)[:-3])
    with pytest.raises(InputError, match="truncated"):
        read_idx(tmp_path / "t")
    (tmp_path / "m").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(InputError, match="magic"):
        read_idx(tmp_path / "m")


def test_fashion_mnist_system_files():
    d = describe(DataConfig(imbalance_ratio=100, noise_mode="uniform_excl_true", noise_rate=0.4, val_fraction=0))
    assert d["profile_counts"] == [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]
    assert d["num_samples"] == 14886 and d["num_test"] == 10000
    assert d["noise_rate"] == pytest.approx(int(0.4 * 14886) / 14886)


def test_npz_source(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "feat.npz"
    np.savez(p, X=rng.normal(size=(60, 5)), y=np.repeat(np.arange(3), 20), X_test=rng.normal(size=(9, 5)),
             y_test=np.repeat(np.arange(3), 3))
    src = load_npz(p)
    assert src.kind == "features" and src.num_classes == 3 and src.train_x.dtype == np.float32
    b = build_data(DataConfig(dataset="npz", root=str(p), imbalance_ratio=1, noise_mode="none", val_fraction=0))
    assert b.train_x.shape == (60, 5) and b.train_true is None
    np.savez(tmp_path / "bad.npz", X=np.zeros((3, 2)), y=np.zeros(3))
    with pytest.raises(InputError, match="lacks X_test, y_test"):
        load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "nan.npz", X=np.full((3, 2), np.nan), y=np.zeros(3, int), X_test=np.zeros((1, 2)), y_test=[0])
    with pytest.raises(InputError, match="NaN"):
        load_npz(tmp_path / "nan.npz")


def test_image_folder_csv(tmp_path):
    from PIL import Image

    rows = ["path,label,split"]
    for i in range(12):
        Image.fromarray(np.full((8, 8, 3), i * 10, np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{['cat', 'dog'][i % 2]},{'test' if i >= 10 else 'train'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows))
    src = load_image_folder(tmp_path, tmp_path / "labels.csv")
    assert src.train_x.shape == (10, 3, 8, 8) and src.class_names == ["cat", "dog"]
    assert src.train_labels.tolist() == [0, 1] * 5 and len(src.test_labels) == 2
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "3.png")
    with pytest.raises(InputError, match="resize"):
        load_image_folder(tmp_path, tmp_path / "labels.csv")


def test_label_cache_is_reused_and_keyed_by_seed(tmp_path):
    cfg = DataConfig(n_max=200, imbalance_ratio=10, cache_dir=str(tmp_path))
    a = build_data(cfg)
    files = list((tmp_path / "labels").glob("*.npz"))
    assert len(files) == 1
    b = build_data(cfg)
    assert a.fingerprint == b.fingerprint and np.array_equal(a.train_y, b.train_y)
    c = build_data(DataConfig(n_max=200, imbalance_ratio=10, cache_dir=str(tmp_path), data_seed=1))
    assert len(list((tmp_path / "labels").glob("*.npz"))) == 2
    assert c.fingerprint != a.fingerprint
    files[0].write_bytes(b"corrupt")  # a damaged cache entry is regenerated, identically
    assert build_data(cfg).fingerprint == a.fingerprint


def test_val_split_is_stratified_by_noisy_label():
    cfg = DataConfig(n_max=500, imbalance_ratio=10, val_fraction=0.2)
    b = build_data(cfg)
    nv = np.bincount(b.val_y, minlength=10)
    nt = np.bincount(b.train_y, minlength=10)
    assert np.all(np.abs(nv / (nv + nt) - 0.2) < 0.02)


@pytest.mark.parametrize("dataset", ["npz", "image_folder"])
def test_own_data_is_used_as_given_unless_noise_or_a_tail_is_asked_for(dataset):
    """A user's data defaults to noise_mode=none and imbalance_ratio=1 (no flags needed); what is asked for still
    wins, and the evaluation says that synthetic noise or subsampling was applied to the user's data."""
    from dsink.config import load_config
    from dsink.eval.evaluate import synthetic_on_own_data

    cfg = load_config(None, [f"data.dataset={dataset}", "data.root=/x"])
    assert cfg.data.noise_mode == "none" and cfg.data.imbalance_ratio == 1
    assert synthetic_on_own_data(cfg.data) is None
    asked = load_config(None, [f"data.dataset={dataset}", "data.root=/x", "data.noise_mode=uniform_excl_true",
                               "data.noise_rate=0.2", "data.imbalance_ratio=10"])
    assert asked.data.noise_mode == "uniform_excl_true" and asked.data.imbalance_ratio == 10
    note = synthetic_on_own_data(asked.data)
    assert "synthetic label noise (uniform_excl_true, rate 0.2)" in note and "imbalance_ratio 10" in note
    bench = load_config(None, ["data.dataset=fashion_mnist"])  # benchmarks keep the field's protocol defaults
    assert bench.data.noise_mode == "uniform_excl_true" and bench.data.imbalance_ratio == 100
    assert synthetic_on_own_data(bench.data) is None


def test_own_data_defaults_reach_dsink_run_in_a_fresh_process(tmp_path):
    """The datasets' own defaults are installed by the entry points themselves (a fresh interpreter that imports
    only dsink.pipeline, as `dsink run` does), not by whatever else a test session imported first."""
    import subprocess
    import sys

    code = ("from dsink.pipeline import load_pipeline; b, _ = load_pipeline(None, ['data.dataset=image_folder', "
            "'data.root=X']); print(b.data.noise_mode, b.data.imbalance_ratio)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["none", "1.0"]
