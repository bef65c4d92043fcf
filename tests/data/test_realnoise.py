"""The real-noise benchmarks (Clothing1M, mini-WebVision, Food-101N) on tiny stand-ins in their published layouts."""

from __future__ import annotations

import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from dsink.cli import main
from dsink.config import DataConfig
from dsink.data import build_data, describe, list_datasets, load_dataset
from dsink.data.images import ImageFiles
from dsink.data.realnoise import CLOTHING1M_CLASSES
from dsink.errors import InputError

REAL = ("--noise-mode", "none", "--imbalance-ratio", "1", "--set", "data.image_size=8",
        "--set", "data.val_fraction=0.5")


def _image_bytes(fmt: str, c: int) -> bytes:
    from PIL import Image

    a = np.zeros((8, 8, 3), np.uint8)
    a[..., c % 3] = 40 + 4 * c % 200
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt)
    return buf.getvalue()


_CACHE: dict = {}


def _write_image(path: Path, c: int) -> None:
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    if (fmt, c) not in _CACHE:
        _CACHE[fmt, c] = _image_bytes(fmt, c)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_CACHE[fmt, c])


def _lines(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def _cfg(dataset: str, root, **kw) -> DataConfig:
    return DataConfig(dataset=dataset, root=str(root), image_size=8, noise_mode="none", imbalance_ratio=1, **kw)


def _cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


# --------------------------------------------------------------------------- stand-ins
def make_clothing1m(root: Path) -> dict:
    """28 noisy training keys (2 per class), 10 of them with a clean label (3 differ: noise 0.3), 7 clean
    validation keys, 14 clean test keys (one per class); two extra keys in noisy_label_kv.txt."""
    key = lambda i: f"images/{i % 10}/{i:02d}/{1000 + i}.jpg"  # noqa: E731
    train = list(range(28))
    noisy = {key(i): i % 14 for i in train + [90, 91]}
    clean = {key(i): (i % 14 if i not in (1, 4, 7) else (i % 14 + 1) % 14) for i in range(10)}
    val, test = list(range(40, 47)), list(range(60, 74))
    clean.update({key(i): i % 7 for i in val})
    clean.update({key(i): i - 60 for i in test})
    for i in train + val + test:
        _write_image(root / key(i), i % 14)
    _lines(root / "noisy_label_kv.txt", [f"{k} {y}" for k, y in noisy.items()])
    _lines(root / "clean_label_kv.txt", [f"{k} {y}" for k, y in clean.items()])
    _lines(root / "noisy_train_key_list.txt", [key(i) for i in train])
    _lines(root / "clean_val_key_list.txt", [key(i) for i in val])
    _lines(root / "clean_test_key_list.txt", [key(i) for i in test])
    return {"train": [noisy[key(i)] for i in train], "val": [clean[key(i)] for i in val],
            "test": [clean[key(i)] for i in test]}


def make_webvision(root: Path, imagenet: bool = False) -> dict:
    """61 Google training images of the first 50 classes (one each, and 11 more of classes 0..10) plus 3 lines of
    other classes; 50 + 2 validation lines; synsets.txt; optionally imagenet/val/<synset>/ (2 images each)."""
    wnids = [f"n{1440764 + i:08d}" for i in range(60)]
    train = [(f"google/q{c + 1:04d}/{i:07d}.jpg", c) for i, c in enumerate(list(range(50)) + list(range(11)))]
    for rel, c in train:
        _write_image(root / rel, c)
    other = [("google/q0051/9000001.jpg", 50), ("google/q0700/9000002.jpg", 699), ("google/q1000/9000003.jpg", 999)]
    _lines(root / "info" / "train_filelist_google.txt", [f"{r} {c}" for r, c in train[:30] + other + train[30:]])
    val = [(f"val{i + 1:06d}.jpg", i) for i in range(50)]
    for rel, c in val:
        _write_image(root / "val_images_256" / rel, c)
    other = [("val000051.jpg", 51), ("val000052.jpg", 300)]
    _lines(root / "info" / "val_filelist.txt", [f"{r} {c}" for r, c in val + other])
    _lines(root / "info" / "synsets.txt", [f"{w} class{i} word, other words" for i, w in enumerate(wnids)])
    if imagenet:
        for c, w in enumerate(wnids[:50]):
            for j in range(2):
                _write_image(root / "imagenet" / "val" / w / f"ILSVRC2012_val_{c * 2 + j:08d}.JPEG", c)
    return {"train": [c for _, c in train], "test": [c for _, c in val], "wnids": wnids}


FOOD = ("apple_pie", "baby_back_ribs", "beef_tartare", "waffles")


def make_food101n(root: Path, food101: Path | None = None) -> dict:
    """24 images (6 per class) in imagelist.tsv; verified_train: 8 of them, 2 wrong (noise 0.25); verified_val:
    3 of them and one more image, 1 wrong (0.25); Food-101's test set (2 per class) at ``food101``."""
    images = [f"{c}/{c[:3]}{i:04d}.jpg" for c in FOOD for i in range(6)]
    for rel in images:
        _write_image(root / "images" / rel, FOOD.index(rel.split("/")[0]))
    _lines(root / "meta" / "imagelist.tsv", ["class_name/key", *images])
    vt = [(images[i], 0 if i in (2, 9) else 1) for i in (0, 2, 5, 7, 9, 12, 18, 23)]
    _lines(root / "meta" / "verified_train.tsv", ["class_name/key\tverification_label", *(f"{r}\t{v}" for r, v in vt)])
    extra = "waffles/waf9999.jpg"
    _write_image(root / "images" / extra, 3)
    vv = [(images[1], 1), (images[8], 0), (images[20], 1), (extra, 1)]
    _lines(root / "meta" / "verified_val.tsv", ["class_name/key\tverification_label", *(f"{r}\t{v}" for r, v in vv)])
    food101 = food101 or root / "food-101"
    test = [f"{c}/{100 + i}" for c in FOOD for i in range(2)]
    for rel in test:
        _write_image(food101 / "images" / f"{rel}.jpg", FOOD.index(rel.split("/")[0]))
    _lines(food101 / "meta" / "test.txt", test)
    val_keys = {r for r, _ in vv}
    train = [r for r in images if r not in val_keys]
    return {"train": train, "val": [r for r, _ in vv], "test": test}


# --------------------------------------------------------------------------- the readers
def test_the_benchmarks_are_registered():
    assert {"clothing1m", "webvision", "webvision_imagenet", "food101n"} <= set(list_datasets())


def test_clothing1m_splits_labels_and_measured_noise(tmp_path):
    made = make_clothing1m(tmp_path / "c1m")
    src = load_dataset(_cfg("clothing1m", tmp_path / "c1m"))
    assert isinstance(src.train_x, ImageFiles) and isinstance(src.test_x, ImageFiles)
    assert src.train_x.shape == (35, 3, 8, 8) and src.num_classes == 14
    assert src.class_names == list(CLOTHING1M_CLASSES)
    assert src.train_labels.tolist() == made["train"] + made["val"]
    assert src.val_mask.tolist() == [False] * 28 + [True] * 7
    assert src.test_labels.tolist() == made["test"] and src.train_true is None
    assert src.train_x.path(0).endswith("images/0/00/1000.jpg") and src.train_x[0].shape == (3, 8, 8)
    info = src.info
    assert (info["num_train"], info["num_val"], info["num_test"]) == (28, 7, 14)
    assert info["num_train_with_clean_label"] == 10 and info["realised_noise_rate"] == pytest.approx(0.3)
    # class names from category_names_eng.txt when present
    _lines(tmp_path / "c1m" / "category_names_eng.txt", [f"Name{i}" for i in range(14)])
    assert load_dataset(_cfg("clothing1m", tmp_path / "c1m")).class_names[13] == "Name13"


def test_webvision_keeps_the_first_50_classes(tmp_path):
    made = make_webvision(tmp_path / "wv")
    src = load_dataset(_cfg("webvision", tmp_path / "wv"))
    assert src.num_classes == 50 and len(src.train_labels) == 61 and src.val_mask is None
    assert sorted(src.train_labels.tolist()) == sorted(made["train"])
    assert src.test_labels.tolist() == made["test"] and all("/val_images_256/" in p for p in src.test_x.paths)
    assert src.class_names[:2] == ["class0 word", "class1 word"] and len(src.class_names) == 50
    assert src.info["train_lines"] == 64 and src.info["num_train"] == 61 and src.info["num_test"] == 50
    (tmp_path / "wv" / "info" / "synsets.txt").unlink()
    assert load_dataset(_cfg("webvision", tmp_path / "wv")).class_names[49] == "class_49"
    # the held-out validation split comes from the builder (data.val_fraction)
    b = build_data(_cfg("webvision", tmp_path / "wv", val_fraction=0.5))
    assert len(b.val_y) + len(b.train_y) == 61 and sorted(b.val_y) == list(range(11)) and len(b.test_y) == 50


def test_webvision_imagenet_tests_on_imagenet_val(tmp_path):
    root = tmp_path / "wv"
    made = make_webvision(root)
    with pytest.raises(InputError, match=r"imagenet/val not found; place ImageNet's .*validation images.*"
                                         r"imagenet/val/<synset>/\*\.JPEG"):
        load_dataset(_cfg("webvision_imagenet", root))
    make_webvision(root, imagenet=True)
    src = load_dataset(_cfg("webvision_imagenet", root))
    assert len(src.train_labels) == 61 and src.test_labels.tolist() == list(np.repeat(np.arange(50), 2))
    assert src.test_x.path(2).split("/")[-2] == made["wnids"][1]
    for f in (root / "imagenet" / "val" / made["wnids"][7]).iterdir():
        f.unlink()
    with pytest.raises(InputError, match=f"no images of synset\\(s\\) {made['wnids'][7]}"):
        load_dataset(_cfg("webvision_imagenet", root))


def test_food101n_splits_labels_and_verified_noise(tmp_path):
    root = tmp_path / "Food-101N"
    made = make_food101n(root)
    src = load_dataset(_cfg("food101n", root))
    assert src.class_names == list(FOOD) and src.num_classes == 4
    assert len(src.train_labels) == 21 + 4 and src.val_mask.sum() == 4 and not src.val_mask[:21].any()
    expected = [FOOD.index(r.split("/")[0]) for r in made["train"] + made["val"]]
    assert src.train_labels.tolist() == expected
    assert src.test_labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert src.test_x.path(0).endswith("food-101/images/apple_pie/100.jpg")
    info = src.info
    assert info["verified_train"] == {"num_verified": 8, "num_wrong": 2, "realised_noise_rate": 0.25}
    assert info["verified_val"] == {"num_verified": 4, "num_wrong": 1, "realised_noise_rate": 0.25}
    assert (info["num_train"], info["num_val"], info["num_test"]) == (21, 4, 8)
    # Food-101's classes.txt sets the order
    _lines(root / "food-101" / "meta" / "classes.txt", list(reversed(FOOD)))
    src = load_dataset(_cfg("food101n", root))
    assert src.class_names == list(reversed(FOOD)) and src.test_labels.tolist() == [3, 3, 2, 2, 1, 1, 0, 0]


def test_food101n_finds_food101_beside_its_folder(tmp_path):
    make_food101n(tmp_path / "Food-101N", food101=tmp_path / "food-101")
    src = load_dataset(_cfg("food101n", tmp_path / "Food-101N"))
    assert len(src.test_labels) == 8 and str(tmp_path / "food-101") in src.test_x.path(0)


# --------------------------------------------------------------------------- the CLI and the builder
@pytest.mark.parametrize("dataset,make,summary", [
    ("clothing1m", make_clothing1m, "clothing1m: 35 samples (28 train / 7 val), 14 test, 14 classes"),
    ("webvision", make_webvision, "webvision: 61 samples (50 train / 11 val), 50 test, 50 classes"),
    ("food101n", make_food101n, "food101n: 25 samples (21 train / 4 val), 8 test, 4 classes"),
])
def test_dsink_data_describe(tmp_path, capsys, dataset, make, summary):
    make(tmp_path / "d")
    args = ["data", "describe", "--set", f"data.dataset={dataset}", "--set", f"data.root={tmp_path / 'd'}", *REAL]
    code, out, err = _cli(capsys, *args)
    assert code == 0, err
    assert summary in out and "noise: none" in out
    code, out, err = _cli(capsys, *args, "--json")
    d = json.loads(out)
    assert code == 0 and d["images"]["num_files"] == d["num_samples"] + d["num_test"]
    info = d["source_info"]
    if dataset == "clothing1m":
        assert info["realised_noise_rate"] == pytest.approx(0.3) and d["validation"] == "the data's own split"
    elif dataset == "food101n":
        assert info["verified_train"]["realised_noise_rate"] == 0.25
    else:
        assert "not measurable" in info["noise"]


def test_synthetic_noise_on_real_noise_is_refused_and_subsampling_warned(tmp_path, capsys):
    make_clothing1m(tmp_path / "c1m")
    # the dataset's own defaults (noise_mode none, imbalance_ratio 1, image_size 224): the bare command works
    code, out, err = _cli(capsys, "data", "describe", "--set", "data.dataset=clothing1m", "--set",
                          f"data.root={tmp_path / 'c1m'}", "--json")
    d = json.loads(out)
    assert code == 0 and (d["noise_mode"], d["imbalance_ratio"]) == ("none", 1)
    assert d["num_test"] == 14 and d["source_info"]["realised_noise_rate"] == pytest.approx(0.3)
    # synthetic noise asked for explicitly is refused
    code, out, err = _cli(capsys, "data", "describe", "--set", "data.dataset=clothing1m", "--set",
                          f"data.root={tmp_path / 'c1m'}", "--set", "data.noise_mode=symmetric", "--set",
                          "data.noise_rate=0.2")
    assert code == 2 and "real label noise" in err and "data.noise_mode=none" in err
    with pytest.raises(InputError, match="data.image_size"):
        load_dataset(DataConfig(dataset="clothing1m", root=str(tmp_path / "c1m")))
    with pytest.warns(UserWarning, match="subsampled long-tailed by its given \\(noisy\\) labels"):
        describe(DataConfig(dataset="clothing1m", root=str(tmp_path / "c1m"), image_size=8, noise_mode="none",
                            imbalance_ratio=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        describe(_cfg("clothing1m", tmp_path / "c1m"))


def _clothing_error(tmp_path, edit) -> str:
    root = tmp_path / "c1m"
    make_clothing1m(root)
    edit(root)
    with pytest.raises(InputError) as e:
        load_dataset(_cfg("clothing1m", root))
    return str(e.value)


def test_bad_clothing1m_files_name_the_file_and_line(tmp_path, capsys):
    def malformed(root):
        p = root / "noisy_label_kv.txt"
        lines = p.read_text().splitlines()
        lines[2] = "foo"
        p.write_text("\n".join(lines) + "\n")

    msg = _clothing_error(tmp_path / "a", malformed)
    assert msg == (f"line 3 of {tmp_path / 'a' / 'c1m' / 'noisy_label_kv.txt'} is 'foo': expected '<path> <label>' "
                   "(e.g. 'images/0/00/123.jpg 4')")

    def out_of_range(root):
        p = root / "clean_label_kv.txt"
        p.write_text(p.read_text() + "images/9/99/1.jpg 14\n")

    msg = _clothing_error(tmp_path / "b", out_of_range)
    assert "clean_label_kv.txt: label 14 is out of range; expected a class index 0..13" in msg and "line 32" in msg

    msg = _clothing_error(tmp_path / "c", lambda root: (root / "images/3/03/1003.jpg").unlink())
    assert "1 of 28 listed images checked do not exist" in msg and "1003.jpg" in msg
    assert "line 4 of" in msg and "noisy_train_key_list.txt" in msg

    msg = _clothing_error(tmp_path / "d", lambda root: (root / "clean_val_key_list.txt").write_text("images/x.jpg\n"))
    assert "line 1 of" in msg and "key 'images/x.jpg' has no label in" in msg and "clean_label_kv.txt" in msg

    root = tmp_path / "e" / "c1m"
    make_clothing1m(root)
    (root / "clean_test_key_list.txt").unlink()
    code, _, err = _cli(capsys, "data", "describe", "--set", "data.dataset=clothing1m", "--set", f"data.root={root}",
                        *REAL)
    assert code == 2 and f"{root / 'clean_test_key_list.txt'} not found; it must hold one image key per line" in err


def test_bad_webvision_and_food101n_files(tmp_path, capsys):
    wv = tmp_path / "wv"
    make_webvision(wv)
    p = wv / "info" / "val_filelist.txt"
    p.write_text(p.read_text() + "val000099.jpg -1\n")
    with pytest.raises(InputError, match=r"line 53 of .*val_filelist.txt: label -1 is out of range; expected a "
                                         r"class index 0\.\.999"):
        load_dataset(_cfg("webvision", wv))
    (wv / "info" / "train_filelist_google.txt").unlink()
    code, _, err = _cli(capsys, "data", "describe", "--set", "data.dataset=webvision", "--set", f"data.root={wv}",
                        *REAL)
    assert code == 2 and "train_filelist_google.txt not found; it must hold lines '<path> <label>'" in err

    food = tmp_path / "Food-101N"
    make_food101n(food)
    p = food / "meta" / "verified_train.tsv"
    p.write_text(p.read_text() + "apple_pie/x.jpg 1\n")
    with pytest.raises(InputError, match=r"line 10 of .*verified_train.tsv is 'apple_pie/x.jpg 1': expected "
                                         r"'<class_name>/<key><TAB>0\|1'"):
        load_dataset(_cfg("food101n", food))
    other = tmp_path / "other" / "Food-101N"
    make_food101n(other)
    shutil.rmtree(other / "food-101")
    with pytest.raises(InputError, match="Food-101 \\(the test set of Food-101N\\) not found"):
        load_dataset(_cfg("food101n", other))


def test_training_on_the_clothing1m_stand_in(tmp_path, capsys):
    root = tmp_path / "c1m"
    make_clothing1m(root)
    out = tmp_path / "run"
    code, stdout, err = _cli(capsys, "train", "--method", "ce", "--dataset", "clothing1m", "--root", str(root),
                             "--noise-mode", "none", "--imbalance-ratio", "1", "--set", "data.image_size=16",
                             "--set", "model.name=small_cnn", "--set", "model.width=4", "--set", "optim.batch_size=8",
                             "--epochs", "1", "--device", "cpu", "--out", str(out), "-q")
    assert code == 0, err
    report = json.loads((out / "eval.json").read_text())
    assert (out / "checkpoints" / "last.pt").is_file() and 0 <= report["last"]["top1"] <= 1
    assert report["evaluated_on"] == "test" and report["num_classes"] == 14
    assert "top1" in stdout


@pytest.mark.parametrize("name,dataset,pretrained,lr,epochs", [
    ("clothing1m.yaml", "clothing1m", True, 0.002, 2),
    ("webvision.yaml", "webvision", False, 0.01, 100),
    ("food101n.yaml", "food101n", True, 0.002, 30),
])
def test_the_configs_use_the_data_as_published(name, dataset, pretrained, lr, epochs):
    from dsink.pipeline import load_pipeline, role_config

    base, pipe = load_pipeline(Path(__file__).parents[2] / "configs" / name)
    d = base.data
    assert (d.dataset, d.noise_mode, d.imbalance_ratio, d.image_size) == (dataset, "none", 1, 224)
    assert base.model.name == "resnet50" and (base.model.pretrained is not None) == pretrained
    assert (base.optim.lr, base.optim.batch_size, base.optim.epochs) == (lr, 32, epochs)
    for role, method in (("imbalance", pipe.imbalance), ("noise", pipe.noise)):
        assert role_config(base, pipe, role, method, 0).method.name == method.name


def test_describe_takes_the_dataset_config_file(tmp_path, capsys):
    """`dsink data describe configs/clothing1m.yaml --set data.root=DIR`: a dsink run config (with its pipeline
    section) is accepted; its data section is described."""
    make_clothing1m(tmp_path / "c1m")
    config = Path(__file__).resolve().parents[2] / "configs" / "clothing1m.yaml"
    code, out, err = _cli(capsys, "data", "describe", str(config), "--set", f"data.root={tmp_path / 'c1m'}", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["dataset"] == "clothing1m" and d["num_test"] == 14 and d["noise_mode"] == "none"
